#!/usr/bin/env bash
# Makes small seed images for the fuzzer with mkfs.erofs (needs root for devices and
# trusted xattrs). Seeds are a few KiB so the fuzzer mutates metadata, not file data.
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)/seeds
mkdir -p "$out"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
mkdir -p "$t/s/d/e" "$t/s/empty"
printf 'hello\n' > "$t/s/d/f"
head -c 5000 /dev/zero | tr '\0' a > "$t/s/big"
: > "$t/s/zero"
ln "$t/s/d/f" "$t/s/hard"
ln -s d/f "$t/s/sym"
mkfifo "$t/s/fifo"
mknod "$t/s/chr" c 1 3 || true
for i in 1 2 3; do printf 'x' > "$t/s/x$i"; setfattr -n user.shared -v same "$t/s/x$i"; done
setfattr -n user.own -v "$(head -c 300 /dev/zero | tr '\0' v)" "$t/s/x1"
setfattr -n trusted.t -v 1 "$t/s/d" || true
mkfs.erofs -T0 -U00000000-0000-0000-0000-000000000000 "$out/compact.img" "$t/s" >/dev/null
mkfs.erofs -T0 -U00000000-0000-0000-0000-000000000000 -Eforce-inode-extended "$out/extended.img" "$t/s" >/dev/null
mkfs.erofs -T0 -U00000000-0000-0000-0000-000000000000 --chunksize=4096 "$out/chunk.img" "$t/s" >/dev/null
mkfs.erofs -T0 -U00000000-0000-0000-0000-000000000000 --chunksize=4096 -Eforce-chunk-indexes "$out/chunk-indexes.img" "$t/s" >/dev/null
mkfs.erofs -T0 -U00000000-0000-0000-0000-000000000000 -Enoinline_data "$out/noinline.img" "$t/s" >/dev/null
mkfs.erofs -T0 -U00000000-0000-0000-0000-000000000000 -zlz4 "$out/lz4.img" "$t/s" >/dev/null
mkfs.erofs -T0 -U00000000-0000-0000-0000-000000000000 -x0 "$out/shared-xattrs.img" "$t/s" >/dev/null
# Compressed layouts Debian's mkfs 1.5 makes: big pclusters (compact indexes with CBLKCNT)
# and ztailpacking. lzma, deflate and zstd seeds are the 1.9.3 reference images (README).
head -c 20000 /dev/zero | tr '\0' b > "$t/s/big2"
seq 1 3000 > "$t/s/numbers"
mkfs.erofs -T0 -U00000000-0000-0000-0000-000000000000 -zlz4hc -C16384 "$out/lz4hc-C16k.img" "$t/s" >/dev/null
mkfs.erofs -T0 -U00000000-0000-0000-0000-000000000000 -zlz4 -Eztailpacking "$out/lz4-ztail.img" "$t/s" >/dev/null
ls -la "$out"
