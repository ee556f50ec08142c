#!/usr/bin/env bash
# Host discovery for `horovodrun --host-discovery-script` (train.py --elastic, docs/elastic.md).
# Prints the lines of $IAPDCNN_ELASTIC_HOSTS ("host:slots", one a line) whose host is not in
# $IAPDCNN_ELASTIC_BLACKLIST (one host a line; where train.py --evict-after writes the hosts it
# evicts). Horovod polls this script: edit the hosts file to take a host away or bring it back.
set -u
hosts=${IAPDCNN_ELASTIC_HOSTS:?set IAPDCNN_ELASTIC_HOSTS to a file of host:slots lines}
black=${IAPDCNN_ELASTIC_BLACKLIST:-}
[ -f "$hosts" ] || exit 0
while IFS= read -r line || [ -n "$line" ]; do
    host=${line%%:*}
    [ -n "$host" ] || continue
    case $host in \#*) continue ;; esac
    if [ -n "$black" ] && [ -f "$black" ] && grep -qxF -- "$host" "$black"; then
        continue
    fi
    echo "$line"
done <"$hosts"
