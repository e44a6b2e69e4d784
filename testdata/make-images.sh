#!/usr/bin/env bash
# Builds the reference EROFS images in testdata/images with mkfs.erofs (Debian's 1.5),
# over a deterministic tree that has every file type, hard links, shared and inline
# xattrs (large values, values crossing blocks), long and non-UTF-8 names, empty files
# and dirs, 4095/4096-byte files and a directory with thousands of entries.
#
# Usage:
#   testdata/make-images.sh [OUTDIR]        tree + manifest + every image (needs root);
#                                           ALL_VARIANTS=1 adds more (-x0, -x-1, lz4hc
#                                           with ztailpacking, legacy lz4)
#   testdata/make-images.sh tree DIR        only create the source tree in DIR
#   testdata/make-images.sh manifest DIR    print the manifest of tree DIR
#
# The manifest (OUTDIR/manifest.txt) lets tests check the shipped images without the
# source tree. One line per path, fields separated by one space, paths and names in hex:
#   i <path-hex> <type f|d|l|c|b|p|s> <mode-octal> <uid> <gid> <size> <nlink> <mtime> <extra> <sha256|-> <ino>
#     extra = symlink target hex, major:minor for devices, '-' otherwise; sha256 only for
#     non-empty regular files; ino = source inode number (equal ino = one hard-link group)
#   x <path-hex> <name-hex> <value-hex>
# Paths are relative to the root, "/" for the root itself, e.g. "/dir/file".
# Requires: bash, coreutils, attr (setfattr/getfattr), mkfs.erofs; root for device
# nodes, ownership and trusted.* xattrs.
set -euo pipefail
export LC_ALL=C

hex() { printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'; }

# mtime: deterministic, varied seconds
stamp() { touch -h -d "@$2" "$1"; }

make_tree() {
    local t=$1
    mkdir -p "$t"
    cd "$t"
    mkdir -p dir/sub/deeper empty-dir many links xattrs names special
    : > empty-file
    head -c 4095 /dev/zero | tr '\0' 'a' > file-4095
    head -c 4096 /dev/zero | tr '\0' 'b' > file-4096
    head -c 4097 /dev/zero | tr '\0' 'c' > file-4097
    seq 1 3000 > dir/numbers.txt                     # 13893 bytes: 3 blocks + tail
    printf 'hello\n' > dir/sub/hello
    printf 'deep\n' > dir/sub/deeper/deep.txt
    truncate -s 20000 sparse                          # all hole
    { head -c 5000 /dev/zero | tr '\0' 'x'; } > sparse-mixed
    truncate -s 16384 sparse-mixed
    printf 'tail' >> sparse-mixed
    chmod 4755 file-4097; chmod 0000 file-4095; chmod 1777 empty-dir; chmod 2750 dir/sub
    # Hard links: a group of three across directories, and a pair.
    printf 'linked\n' > links/a
    ln links/a links/b; ln links/a dir/a-link
    printf 'pair\n' > links/p1; ln links/p1 links/p2
    # Symlinks: short, long (300 bytes), dangling, absolute, to a directory.
    ln -s hello dir/sub/to-hello
    ln -s "$(printf 'long/%.0s' $(seq 1 60))" links/long-symlink
    ln -s /nonexistent/target links/dangling
    ln -s ../dir links/to-dir
    # Special files.
    mknod special/chr c 1 3
    mknod special/blk b 8 1
    mknod special/big-dev c 259 1048575
    mkfifo special/fifo
    if command -v python3 >/dev/null; then
        python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' special/socket
    else
        mknod special/socket s 2>/dev/null || true
    fi
    # Names: 254 bytes (mkfs.erofs 1.5 fails on 255-byte names), non-UTF-8, sorting before ".", spaces, unicode.
    : > "names/$(printf 'n%.0s' $(seq 1 254))"
    : > "names/$(printf 'bad-\xff\xfe-utf8')"
    : > "names/ space"
    : > "names/-dash"
    : > "names/#hash"
    : > "names/caf$(printf '\xc3\xa9')"
    # A directory with thousands of entries (many directory blocks). To keep the images
    # small most entries are hard links to one inode; every 100th is its own empty file.
    : > many/entry-0000
    for i in $(seq -w 1 2500); do
        if [ $((10#$i % 100)) -eq 0 ]; then : > "many/entry-$i"; else ln many/entry-0000 "many/entry-$i"; fi
    done
    # Xattrs: shared (same name+value on many files), inline (unique), large values,
    # values crossing block boundaries, every short prefix.
    for i in $(seq 1 12); do
        printf 'x%s\n' "$i" > "xattrs/f$i"
        setfattr -n user.shared-a -v common-value-a "xattrs/f$i"
        setfattr -n user.shared-b -v common-value-b "xattrs/f$i"
        setfattr -n trusted.shared -v 0x01020304 "xattrs/f$i"
        setfattr -n "user.unique-$i" -v "value-$i" "xattrs/f$i"
    done
    for i in $(seq 1 40); do
        setfattr -n "user.many-inline-$i" -v "$(printf 'v%.0s' $(seq 1 $i))" xattrs/f1
    done
    setfattr -n user.large -v "$(head -c 3000 /dev/zero | tr '\0' 'L')" xattrs/f2
    setfattr -n user.large2 -v "$(head -c 600 /dev/zero | tr '\0' 'M')" xattrs/f2
    setfattr -n security.label -v "sec" xattrs/f3
    setfattr -n trusted.big-shared -v "$(head -c 1500 /dev/zero | tr '\0' 'S')" xattrs/f4
    setfattr -n trusted.big-shared -v "$(head -c 1500 /dev/zero | tr '\0' 'S')" xattrs/f5
    setfattr -n trusted.big-shared -v "$(head -c 1500 /dev/zero | tr '\0' 'S')" xattrs/f6
    setfattr -n user.on-dir -v dirvalue dir
    setfattr -h -n trusted.on-symlink -v linkvalue dir/sub/to-hello
    setfattr -n user.on-empty -v e empty-file
    # Ownership: small ids, and ids above 65535 (need extended inodes).
    chown 1000:1000 dir/sub/hello
    chown 70000:80000 file-4096
    chown -h 123:456 links/dangling
    chown 0:5 special/chr
    # Deterministic mtimes, deepest first so directory times stick.
    local n=0
    while IFS= read -r -d '' p; do
        n=$((n + 1))
        stamp "$p" $((1600000000 + n * 7919))
    done < <(find . -depth -print0 | sort -z -r)
    cd - >/dev/null
}

manifest() {
    local t=$1
    cd "$t"
    find . -print0 | sort -z | while IFS= read -r -d '' p; do
        local rel=${p#.}
        [ -z "$rel" ] && rel=/
        local ty mode uid gid size nlink mtime maj min ino extra=- sum=-
        read -r ty mode uid gid size nlink mtime maj min ino < <(stat -c '%F|%a|%u|%g|%s|%h|%Y|%t|%T|%i' "$p" | tr ' ' '_' | tr '|' ' ')
        case $ty in
            regular_file) ty=f; sum=$(sha256sum < "$p" | cut -d' ' -f1) ;;
            regular_empty_file) ty=f ;;
            directory) ty=d; size=0 ;;
            symbolic_link) ty=l; extra=$(hex "$(readlink "$p")") ;;
            character_special_file) ty=c; extra=$((16#$maj)):$((16#$min)); size=0 ;;
            block_special_file) ty=b; extra=$((16#$maj)):$((16#$min)); size=0 ;;
            fifo) ty=p; size=0 ;;
            socket) ty=s; size=0 ;;
        esac
        echo "i $(hex "$rel") $ty $mode $uid $gid $size $nlink $mtime $extra $sum $ino"
        getfattr -h -d -m - -e hex --absolute-names "$p" 2>/dev/null | while IFS= read -r line; do
            case $line in
                ""|"# file:"*) ;;
                *=*) echo "x $(hex "$rel") $(hex "${line%%=*}") ${line#*=0x}" ;;
                *) echo "x $(hex "$rel") $(hex "$line") " ;;
            esac
        done
    done
    cd - >/dev/null
}

UUID=c0ffee00-1234-4321-8765-0123456789ab

build_all() {
    local out=$1
    mkdir -p "$out"
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    make_tree "$WORK/tree"
    manifest "$WORK/tree" > "$out/manifest.txt"
    # name | options
    local variants=(
        "compact|-T0"
        "extended|-T0 -Eforce-inode-extended"
        "mtime|"
        "xattr-x1|-T0 -x1"
        "noinline|-T0 -Enoinline_data"
        "chunk-blockmap|-T0 --chunksize=4096 -Eforce-inode-blockmap"
        "chunk-indexes|-T0 --chunksize=8192 -Eforce-chunk-indexes"
        "lz4|-T0 -zlz4"
    )
    # More variants for CI, which regenerates the images (ALL_VARIANTS=1); not shipped,
    # to keep testdata small.
    if [ "${ALL_VARIANTS:-0}" = 1 ]; then
        variants+=(
            "xattr-x0|-T0 -x0"
            "xattr-off|-T0 -x-1"
            "lz4hc-ztailpacking|-T0 -zlz4hc -Eztailpacking"
            "lz4-legacy|-T0 -zlz4 -Elegacy-compress"
        )
    fi
    for v in "${variants[@]}"; do
        local name=${v%%|*} opts=${v#*|}
        # shellcheck disable=SC2086
        mkfs.erofs -U"$UUID" $opts "$out/$name.erofs" "$WORK/tree" >/dev/null 2>&1 || {
            echo "mkfs.erofs $opts failed" >&2
            mkfs.erofs -U"$UUID" $opts "$out/$name.erofs" "$WORK/tree" >&2
            exit 1
        }
    done
    mkfs.erofs --version 2>/dev/null | head -1 > "$out/mkfs-version.txt" || true
}

case ${1:-} in
    tree) make_tree "$2" ;;
    manifest) manifest "$2" ;;
    *) build_all "${1:-$(dirname "$0")/images}" ;;
esac
