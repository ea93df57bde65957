#!/bin/bash
# Guest profile (docs/performance.md): reuses the initramfs of the last
# `cargo xtask qemu --bench` (its scull.ko, scull-tool and busybox), adds the
# host's perf (apt package linux-perf) with the libraries ldd names, and boots
# the same kernel the same way with a profiling /init instead.
# Usage: tools/guest-profile.sh [extra kernel args]   (output on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || apt-get install -y linux-perf >/dev/null
Q=target/qemu
P=target/prof/initramfs
[ -d $Q/initramfs ] || { echo "run cargo xtask qemu --bench first" >&2; exit 1; }
mkdir -p target/prof
rm -rf $P && cp -a $Q/initramfs $P
PERF=$(readlink -f "$(command -v perf)")
mkdir -p $P/usr/bin && cp "$PERF" $P/usr/bin/perf
for l in $(ldd "$PERF" | awk '/=>/{print $3} /ld-linux/{print $1}'); do
  mkdir -p "$P$(dirname "$l")" && cp -L "$l" "$P$l"
done
cat > $P/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp
echo 0 > /proc/sys/kernel/kptr_restrict
echo -1 > /proc/sys/kernel/perf_event_paranoid
insmod /scull.ko
echo "== cmdline $(cat /proc/cmdline)"
echo "== cpu $(grep -m1 'model name' /proc/cpuinfo) flags: $(grep -m1 flags /proc/cpuinfo | grep -oE ' (erms|fsrm|rep_good|fsrs) ' | tr -d '\n')"
# Warm-up, then: 256 MiB fresh write into scull0 and read back, 64 KiB calls.
dd if=/dev/zero of=/dev/scull0 bs=65536 count=16 2>/dev/null
perf record -q -a -e cpu-clock -F 4000 -g -o /tmp/big.data -- sh -c 'dd if=/dev/zero of=/dev/scull0 bs=65536 count=4096; dd if=/dev/scull0 of=/dev/null bs=65536' 2>&1 | grep -v "^$"
echo "== big: flat"
perf report -i /tmp/big.data --stdio --no-children --sort sym 2>/dev/null | grep -v '^$' | grep -E '^ +[0-9]' | head -40
echo "== big: callers of memset/clear_page (children)"
perf report -i /tmp/big.data --stdio --children --sort sym -g none 2>/dev/null | grep -E '^ +[0-9]' | head -40
# 1 MiB, 256 times (trim between): slab objects recycled.
perf record -q -a -e cpu-clock -F 4000 -g -o /tmp/small.data -- sh -c 'i=0; while [ $i -lt 256 ]; do dd if=/dev/zero of=/dev/scull0 bs=65536 count=16 2>/dev/null; dd if=/dev/scull0 of=/dev/null bs=65536 2>/dev/null; i=$((i+1)); done' 2>&1 | grep -v "^$"
echo "== small: flat"
perf report -i /tmp/small.data --stdio --no-children --sort sym 2>/dev/null | grep -E '^ +[0-9]' | head -40
echo "== small: children"
perf report -i /tmp/small.data --stdio --children --sort sym -g none 2>/dev/null | grep -E '^ +[0-9]' | head -30
echo "== memory reference (user space)"
mkdir -p /bench && mount -t tmpfs -o size=320m tmpfs /bench
perf record -q -a -e cpu-clock -F 4000 -o /tmp/mem.data -- /scull-tool --target qemu scale-reference --baseline-dir /bench 2>&1 | grep -v "^$"
perf report -i /tmp/mem.data --stdio --no-children --sort sym 2>/dev/null | grep -E '^ +[0-9]' | head -20
echo "== end"
poweroff -f
INIT
chmod 755 $P/init
(cd $P && find . | cpio -o -H newc --quiet | gzip -1 > ../initrd-prof.gz)
VM=$(ls ~/.cache/scull-rs/linux/vmlinuz-* | head -1)
timeout 1800 qemu-system-x86_64 -accel tcg -m 1536 -smp 1 -nographic -no-reboot -mem-prealloc \
  -kernel "$VM" -initrd target/prof/initrd-prof.gz \
  -append "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init $*" </dev/null
