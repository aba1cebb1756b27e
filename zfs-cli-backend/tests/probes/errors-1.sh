set -u
export LC_ALL=C
t() { echo "### $*"; "$@"; echo "### rc=$?"; }
truncate -s 1G /var/tmp/v && zpool create tank /var/tmp/v
zfs create tank/src
dd if=/dev/urandom of=/tank/src/f bs=64k count=4 2>/dev/null
zfs snapshot tank/src@a
echo 1 > /tank/src/g; zfs snapshot tank/src@b
echo 2 > /tank/src/h; zfs snapshot tank/src@c
zfs send tank/src@a | zfs recv tank/dstI
echo "== -I into fs@to"
zfs send -I tank/src@a tank/src@c > /var/tmp/I.stream
t zfs recv 'tank/dstI@c' < /var/tmp/I.stream
t zfs list -H -p -o name,guid -t snapshot -r tank/dstI
zfs list -H -p -o name,guid -t snapshot -r tank/src
echo "== -I into fs@other (renamed target)"
zfs send tank/src@a | zfs recv tank/dstI2
t zfs recv 'tank/dstI2@zz' < /var/tmp/I.stream
t zfs list -H -p -o name,guid -t snapshot -r tank/dstI2
echo "== -I into fs"
zfs send tank/src@a | zfs recv tank/dstI3
t zfs recv 'tank/dstI3' < /var/tmp/I.stream
t zfs list -H -p -o name,guid -t snapshot -r tank/dstI3
echo "== -p -i into fs@to"
zfs send tank/src@a | zfs recv tank/dstP
zfs send -p -i tank/src@a tank/src@b | zfs recv 'tank/dstP@b'; echo rc=$?
t zfs list -H -p -o name,guid -t snapshot -r tank/dstP
echo "== -p full into fs@to"
zfs send -p tank/src@a | zfs recv 'tank/dstPF@a'; echo rc=$?
echo "== -p -I into fs@c"
zfs send tank/src@a | zfs recv tank/dstPI
zfs send -p -I tank/src@a tank/src@c | zfs recv 'tank/dstPI@c'; echo rc=$?
t zfs list -H -p -o name,guid -t snapshot -r tank/dstPI
echo "== -i into fs@wrongname"
zfs send tank/src@a | zfs recv tank/dstN
zfs send -i tank/src@a tank/src@b | zfs recv 'tank/dstN@other'; echo rc=$?
t zfs list -H -p -o name,guid -t snapshot -r tank/dstN
echo "== destroy on missing dataset"
t zfs destroy 'tank/nosuch@a,b'
t zfs destroy 'tank/src@nosuch1,nosuch2'
echo "== hold multiple, one already held"
zfs hold t1 tank/src@a
t zfs hold t1 tank/src@a tank/src@b tank/src@nosuch
t zfs holds -H tank/src@a tank/src@b
t zfs release t1 tank/src@a tank/src@b tank/src@c tank/src@nosuch
t zfs holds -H tank/src@a tank/src@b
echo "== list two datasets one missing"
t zfs list -H -p -o name,guid,createtxg,creation,userrefs -r -d 1 -t bookmark,snapshot -s createtxg tank/src tank/nosuch tank/dstN
echo "== snapshot existing / multiple with one bad"
t zfs snapshot tank/src@a
t zfs snapshot tank/src@new1 tank/nosuch@new1
t zfs list -H -o name -t snapshot tank/src
t zfs snapshot 'tank/src@x' 'tank/dstN@x'
echo "== create existing, rollback missing"
t zfs create tank/src
t zfs rollback -r tank/src@nosuch
t zfs rollback -r tank/src@a
t zfs create -o zrepl:placeholder=on -o mountpoint=none tank/nosuchparent/ph
echo "== bookmark copy and get on bookmark"
zfs bookmark tank/src@a tank/src#a
t zfs bookmark tank/src#a tank/src#a2
t zfs bookmark tank/src#a tank/src#a2
t zfs get -Hp -o name,property,value,source guid,createtxg tank/src#a2
t zfs get -Hp -o name,property,value,source guid tank/src#nosuch
t zfs get -Hp -o name,property,value,source nosuchprop tank/src
t zfs set 'bad prop=1' tank/src
echo "== recv into partial state"
zfs send tank/src@a > /var/tmp/full.stream
head -c 100000 /var/tmp/full.stream | zfs recv -s tank/part
t zfs recv -s tank/part < /var/tmp/full.stream
t zfs recv -s -F tank/part < /var/tmp/full.stream
t zfs recv tank/part2 < /dev/null
head -c 100 /var/tmp/full.stream > /var/tmp/tiny
t zfs recv tank/part3 < /var/tmp/tiny
head -c 100000 /var/tmp/full.stream > /var/tmp/cut
t zfs recv tank/part4 < /var/tmp/cut
t zfs recv -A tank/nosuch
t zfs send -t 1-abc-def-0123
t zfs send -i tank/src#nosuch tank/src@c
t zfs send -n -v -P -t 1-abc-def-0123
echo "== destroy busy dataset and destroy dataset with children"
t zfs destroy tank/dstI
t zfs destroy tank
t zpool get -H -p -o value feature@extensible_dataset tank
