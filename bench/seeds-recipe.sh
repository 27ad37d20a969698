#!/bin/bash
# The seeds' hand-made jail, step by step: build it, run `true` in it as USER,
# tear it all down. Run as root inside a network namespace of your own.
#   bench/seeds-recipe.sh NAME USER EGRESS DNS
# Names start with "sj-", so appjail's reconcile leaves them alone.
set -euo pipefail
name=sj-$1 user=$2 egress=$3 dns=$4
net=10.232.0

ip netns add "$name"
ip link add "$name" type veth peer name eth0 netns "$name"
ip addr add "$net.1/30" dev "$name"
ip link set "$name" up
ip -n "$name" addr add "$net.2/30" dev eth0
ip -n "$name" link set eth0 up
ip -n "$name" link set lo up
ip -n "$name" route add default via "$net.1"
sysctl -qw "net.ipv4.conf.$name.forwarding=1" "net.ipv4.conf.$egress.forwarding=1"
iptables -w -t nat -A POSTROUTING -s "$net.0/30" -o "$egress" -j MASQUERADE
iptables -w -A FORWARD -i "$name" -o "$egress" -j ACCEPT
iptables -w -A FORWARD -i "$egress" -o "$name" -m state --state ESTABLISHED,RELATED -j ACCEPT
mkdir -p "/etc/netns/$name"
echo "nameserver $dns" >"/etc/netns/$name/resolv.conf"

ip netns exec "$name" runuser -u "$user" -- true

iptables -w -D FORWARD -i "$egress" -o "$name" -m state --state ESTABLISHED,RELATED -j ACCEPT
iptables -w -D FORWARD -i "$name" -o "$egress" -j ACCEPT
iptables -w -t nat -D POSTROUTING -s "$net.0/30" -o "$egress" -j MASQUERADE
rm -r "/etc/netns/$name"
ip link del "$name"
ip netns del "$name"
