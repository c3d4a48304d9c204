#!/bin/bash
# Boot a throwaway systemd host: run as PID 1 of a fresh PID namespace, e.g.
#   unshare --pid --fork --mount --uts --ipc tests/system/boot-host.sh NAME BASE CHECKOUT CGROUP [MASK...]
# (optionally inside `nsenter --net=...` for a private network).  It never writes the machine:
# the root is an overlay (lowerdir=/) whose upper layer lives on a tmpfs at BASE, /tmp and /run
# are fresh tmpfs, /sys and /proc/sys are read-only (cgroups stay writable), /dev is a minimal
# private one (so no unit of the host can touch the machine's devices or kernel settings), and
# the checkout is bound read-only at its own path.  CGROUP is the name of a directory created in
# every cgroup hierarchy: PID 1 moves there first, so this systemd's root cgroup is its own and
# three hosts never share a `system.slice/<unit>` path.  MASK... are units masked at boot.
# SIGKILL to this PID 1 tears everything down with the namespace.
set -euo pipefail
name=$1 base=$2 checkout=$3 cgroup=$4
shift 4

# Our own cgroup in every hierarchy: /sys/fs/cgroup itself on a cgroup v2 machine, else each
# hierarchy mounted below it (v1 controllers, name=systemd, unified).
if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
    hierarchies=(/sys/fs/cgroup/)
else
    hierarchies=()
    for hier in /sys/fs/cgroup/*/; do
        if mountpoint -q "$hier"; then hierarchies+=("$hier"); fi
    done
fi
for hier in "${hierarchies[@]}"; do
    mkdir -p "$hier$cgroup"
    for knob in cpuset.cpus cpuset.mems; do  # a v1 cpuset takes no task until these are set
        if [ -e "$hier$knob" ]; then cat "$hier$knob" >"$hier$cgroup/$knob"; fi
    done
    echo $$ >"$hier$cgroup/cgroup.procs"
done

mount --make-rprivate /
mount -t tmpfs -o mode=0755 m10sys "$base"
mkdir -p "$base/upper" "$base/work" "$base/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root"
root=$base/root

mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
# What the host wrote (the overlay's upper layer), read-only, for tests that ask what changed.
mkdir -p "$root/run/m10sys/upper"
mount --bind "$base/upper" "$root/run/m10sys/upper"
mount -o remount,bind,ro "$root/run/m10sys/upper"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount --bind "$root/proc/sys" "$root/proc/sys"
mount -o remount,bind,ro "$root/proc/sys"
if [ -e "$root/proc/sysrq-trigger" ]; then mount --bind /dev/null "$root/proc/sysrq-trigger"; fi
mount --rbind /sys "$root/sys"
mount -o remount,bind,ro "$root/sys"
if [ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ] && \
        ! mountpoint -q "$root/sys/fs/cgroup/systemd"; then
    mkdir -p "$root/sys/fs/cgroup/systemd"
    mount -t cgroup -o none,name=systemd cgroup "$root/sys/fs/cgroup/systemd"
fi

# A private /dev: the basic nodes, a fresh devpts, shm; console is /dev/null.
mount -t tmpfs -o mode=0755,nosuid dev "$root/dev"
for node in null zero full random urandom tty; do
    touch "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
touch "$root/dev/console"
mount --bind /dev/null "$root/dev/console"
mkdir -p "$root/dev/pts" "$root/dev/shm" "$root/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"

mkdir -p "$root$checkout"
mount --bind "$checkout" "$root$checkout"
mount -o remount,bind,ro "$root$checkout"

echo "$name" >"$root/etc/hostname"
hostname "$name"
systemd-id128 new >"$root/etc/machine-id"

# Units that act on the machine (kernel, devices, clock, consoles) or are pointless here.
units=/etc/systemd/system
for unit in "$@" getty@tty1.service console-getty.service serial-getty@.service \
        systemd-udevd.service systemd-udev-trigger.service systemd-udev-settle.service \
        systemd-modules-load.service kmod-static-nodes.service systemd-sysctl.service \
        systemd-binfmt.service proc-sys-fs-binfmt_misc.automount systemd-timesyncd.service \
        systemd-tmpfiles-setup-dev.service systemd-pstore.service systemd-remount-fs.service \
        sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
        sys-fs-fuse-connections.mount dev-hugepages.mount e2scrub_reap.service \
        apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
        fstrim.timer man-db.timer prometheus.service; do
    ln -sfn /dev/null "$root$units/$unit"
done

cd "$root"
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
exec env -i container=other PATH=/usr/sbin:/usr/bin:/sbin:/bin /lib/systemd/systemd --system \
    --log-target=journal-or-kmsg
