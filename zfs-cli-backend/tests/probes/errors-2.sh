export LC_ALL=C
t() { echo "### $*"; "$@"; echo "### rc=$?"; }
head -c 32 /dev/urandom > /root/k
zfs create -o encryption=on -o keyformat=raw -o keylocation=file:///root/k tank/enc
zfs snapshot tank/enc@1
zfs unmount tank/enc; zfs unload-key tank/enc
t sh -c 'zfs send tank/enc@1 > /dev/null'
t sh -c 'zfs send -w tank/enc@1 > /dev/null'
zfs send -w tank/enc@1 | zfs recv tank/encr
zfs snapshot tank/enc@2 2>&1
t zfs mount tank/encr
t sh -c 'zfs send tank/encr@1 > /dev/null'
zfs create tank/o; zfs snapshot tank/o@1; zfs clone tank/o@1 tank/cl
t zfs destroy 'tank/o@1'
t zfs destroy 'tank/o@1,2'
t zfs hold t 'tank/o#x'
t zfs rollback -r tank/o@nosuch
