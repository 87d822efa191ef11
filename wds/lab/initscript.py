"""The deployment environment's ``/init`` (busybox sh) and its udhcpc hook, as text.

The kernel command line carries (docs/LAB.md): ``wds.server=HOST:PORT wds.session=NAME
wds.fingerprint=sha256:HEX wds.device=MAC wds.target=DEV``. ``/init`` loads the NIC and disk
modules, brings up the NIC whose MAC is ``wds.device`` (any NIC when none matches) with udhcpc,
mounts the target disk's file system (creating an ext2 file system when the disk has none, so that
the receiver's on-disk record survives a reset and the transfer resumes), runs
``python3 -m wds.lab.guest`` (receive, report, print ``WDS-RESULT {json}``), syncs and powers off.
"""

from __future__ import annotations

#: where the receiver writes the image, inside the target disk's file system
IMAGE_NAME = "wds-image"

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /mnt/target /usr/sbin /sbin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo "WDS-ENV: init started"
for m in $(cat /etc/wds-modules); do insmod "/lib/modules/$m" 2>/dev/null; done
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1="*) echo "${w#*=}";; esac; done; }
SERVER=$(arg wds.server); SESSION=$(arg wds.session); FPR=$(arg wds.fingerprint)
DEVICE=$(arg wds.device | tr 'A-F-' 'a-f:'); TARGET=$(arg wds.target)
[ -n "$TARGET" ] || TARGET=/dev/vda
fail() {
    echo "WDS-RESULT {\"status\": \"failed\", \"device\": \"$DEVICE\", \"reason\": \"$1\"}"
    sync; poweroff -f
}
IFACE=""
i=0
while [ $i -lt 50 ] && [ -z "$IFACE" ]; do
    for n in /sys/class/net/*; do
        name=${n##*/}
        [ "$name" = lo ] && continue
        [ "$(cat $n/address)" = "$DEVICE" ] && IFACE=$name
    done
    if [ -z "$IFACE" ] && [ $i -ge 20 ]; then
        for n in /sys/class/net/*; do [ "${n##*/}" != lo ] && IFACE=${n##*/} && break; done
    fi
    [ -n "$IFACE" ] || { i=$((i + 1)); sleep 0.2; }
done
[ -n "$IFACE" ] || fail "no network interface"
ip link set lo up
ip link set "$IFACE" up
udhcpc -i "$IFACE" -f -q -n -B -t 20 -T 2 -s /etc/udhcpc.script || fail "no DHCP lease on $IFACE"
echo "WDS-ENV: $IFACE $(cat /tmp/wds-address) up"
i=0
while [ ! -b "$TARGET" ] && [ $i -lt 50 ]; do i=$((i + 1)); sleep 0.2; done
[ -b "$TARGET" ] || fail "no disk $TARGET"
if ! mount -t ext4 "$TARGET" /mnt/target 2>/dev/null; then
    echo "WDS-ENV: $TARGET has no file system: creating one"
    mke2fs -q "$TARGET" >/dev/null || fail "mke2fs $TARGET failed"
    mount -t ext4 "$TARGET" /mnt/target || fail "cannot mount $TARGET"
fi
ls -la /mnt/target
cd /
python3 -m wds.lab.guest --server "$SERVER" --session "$SESSION" --fingerprint "$FPR" \
    --device "$DEVICE" --interface "$(cat /tmp/wds-address)" --out "/mnt/target/__IMAGE__"
sync
umount /mnt/target
sync
echo "WDS-ENV: powering off"
poweroff -f
""".replace("__IMAGE__", IMAGE_NAME)

UDHCPC_SCRIPT = r"""#!/bin/sh
case "$1" in
    deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
    bound|renew)
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
        ip route add 224.0.0.0/4 dev "$interface" 2>/dev/null
        echo "$ip" > /tmp/wds-address ;;
esac
exit 0
"""
