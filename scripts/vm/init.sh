#!/bin/sh
# /init of the Switchyard test VM's initramfs (built by scripts/vm/initramfs.ts,
# booted by test/vm/harness.ts). Runs under busybox, as PID 1.
#
# The guest has no disk: it mounts the host's root filesystem read-only over
# 9p (tag "hostroot") and chroots into it, so the job runs the host's own
# node, ipvsadm, ip and the repository's code — under a kernel with IPVS.
# A second, writable 9p share (tag "job") carries the job in and its output
# out: job/guest.sh is run, its stdout/stderr land in job/stdout and
# job/stderr, its exit status in job/exit-code.
#
# Progress goes to the serial console as "sy-vm: ..." lines; the harness
# reads them to time the boot and to explain a failure.

/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

say() { echo "sy-vm: $*" > /dev/console; }
die() {
  say "fatal: $*"
  poweroff -f
  sleep 60
}

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

# Modules for virtio-pci and 9p, listed in dependency order by the builder.
for m in $(cat /mods/order); do
  insmod "/mods/$m.ko" || die "insmod $m failed"
done

mkdir -p /mnt
# msize: bigger 9p messages, fewer round trips. cache=loose: the guest caches
# lookups and file pages (safe: the share is read-only for the guest); without
# it every exec and stat is a round trip and `ipvsadm -Ln` took 7 s instead of 0.4 s.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /mnt || die "cannot mount the host root over 9p"
mount -t proc proc /mnt/proc
mount -t sysfs sys /mnt/sys
mount -t devtmpfs dev /mnt/dev
mkdir -p /mnt/dev/pts /mnt/dev/shm 2>/dev/null
mount -t devpts devpts /mnt/dev/pts 2>/dev/null
mount -t tmpfs shm /mnt/dev/shm 2>/dev/null
# The host root is read-only: give the job fresh writable /tmp, /run and /var/tmp
# (`ip netns add` needs /run/netns, tsx caches its compiled files under /tmp).
mount -t tmpfs tmp /mnt/tmp
mount -t tmpfs run /mnt/run
mount -t tmpfs vartmp /mnt/var/tmp
mkdir -p /mnt/run/sy-vm
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 job /mnt/run/sy-vm || die "cannot mount the job share over 9p"
# The repository at its own path, even where the fresh tmpfs above hides it.
repo=$(cat /mnt/run/sy-vm/repo-path 2>/dev/null)
if [ -n "$repo" ]; then
  mkdir -p "/mnt$repo" 2>/dev/null
  mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose repo "/mnt$repo" || die "cannot mount the repository over 9p"
fi

# The kernel's module auto-loader runs its helper in PID 1's root — this
# initramfs, which has no modules. Point it at a modprobe that runs in the
# chroot, where /lib/modules is the host's (same kernel version).
printf '#!/bin/sh\nexec /bin/chroot /mnt /sbin/modprobe "$@"\n' > /bin/chroot-modprobe
chmod 755 /bin/chroot-modprobe
echo /bin/chroot-modprobe > /proc/sys/kernel/modprobe

say "job start"
chroot /mnt /usr/bin/env -i \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 SY_VM=1 \
  /bin/sh /run/sy-vm/guest.sh > /mnt/run/sy-vm/stdout 2> /mnt/run/sy-vm/stderr
rc=$?
echo "$rc" > /mnt/run/sy-vm/exit-code
sync
umount /mnt/run/sy-vm
say "job exit $rc"
poweroff -f
sleep 60
