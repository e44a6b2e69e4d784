#!/usr/bin/env bash
# Makes small compressed seed images with our own mkfs (cargo build --release first): every
# algorithm, big pclusters, ztailpacking, fragments, dedupe, 48-bit and small blocks. The
# 1.9.3 reference images cover the same layouts but are 1-3 MiB each, which keeps the
# fuzzer near a hundred executions a second; these are a few KiB, so it mutates indexes
# and headers thousands of times a second.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mkfs=${MKFS_EROFS_RS:-$root/target/release/mkfs-erofs-rs}
out=$root/fuzz/seeds
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
mkdir -p "$t/s/d"
seq -f "line %g of a fuzz seed, compressible" 1 120 > "$t/s/numbers"       # 4.3 KiB
cp "$t/s/numbers" "$t/s/d/numbers-again"                  # dedupe and fragment twin
head -c 1500 /dev/zero | tr '\0' q > "$t/s/d/run"           # a long match
printf 'tail\n' > "$t/s/tiny"
# 2 KiB that no algorithm shrinks: stored raw (interlaced).
python3 -c 'import sys;x=7
for _ in range(2048): x=(x*1103515245+12345)&0x7fffffff; sys.stdout.buffer.write(bytes([x>>16&255]))' > "$t/s/noise"
ln -s d/run "$t/s/link"
touch -d @0 "$t/s" "$t/s/d" "$t/s"/* "$t/s/d"/*
seed() { name=$1; shift; "$mkfs" --quiet -T0 -U00000000-0000-0000-0000-000000000000 "$@" "$t/s" "$out/$name.img"; }
seed rs-lz4-b512 -zlz4 -b512
seed rs-lz4hc-C2k-b512 -zlz4hc -b512 -C2048
seed rs-lzma-b1024 -zlzma -b1024
seed rs-deflate-b512 -zdeflate -b512
seed rs-zstd-b512 -zzstd -b512
seed rs-lz4-ztail-b512 -zlz4 -b512 -Eztailpacking
seed rs-lz4hc-fragments-b512 -zlz4hc -b512 -C2048 -Eztailpacking,fragments
seed rs-zstd-all-fragments-b512 -zzstd -b512 -Eall-fragments
seed rs-lz4hc-dedupe-b512 -zlz4hc -b512 -Ededupe
seed rs-lz4-48bit-b512 -zlz4 -b512 -E48bit
# The second algorithm only for d/: the algorithm table with two entries in use.
printf '1024 1 ^d/\n' > "$t/hints"
seed rs-two-algorithms-b512 -zlz4hc:lzma -b512 --compress-hints="$t/hints" --fingerprint=sha256
ls -la "$out"/rs-*
