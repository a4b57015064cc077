# The listener's guard, one rule at a time (request_receive_timeout 1 s,
# max_connections_per_client 3): a request trickled over more than its
# deadline is closed, headers or body; a kept-alive connection idle for
# longer than that deadline still serves its next request; a fourth
# connection from one address is refused at once, among open connections
# from many other addresses too; clients that hang up in the middle of their
# headers free their places at once.
#
# Then slow and idle clients from other addresses must not starve ELMO.  1,000
# attacking connections from 127.0.0.2-11 (headers or body a byte every half
# second, answers never read, connections that send nothing; each connects
# again when closed) while "ELMO" sends 200 forecasts from 127.0.0.1, each on
# a new connection: every one answered 204 and stored; p99 under 1 s with
# any client admitted, under 100 ms with elmo_oscp.allowed_clients admitting
# only 127.0.0.1 (the others refused when they connect).
. "$(dirname "$0")/tap.sh"
plan 20
export PGOPTIONS='-c client_min_messages=error'
W=$(mktemp -d)
cleanup() {
  psql -Xq -c "ALTER SYSTEM RESET elmo_oscp.allowed_clients" -c "ALTER SYSTEM RESET elmo_oscp.request_receive_timeout" \
       -c "ALTER SYSTEM RESET elmo_oscp.max_connections_per_client" -c "SELECT pg_reload_conf()" >/dev/null 2>&1
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cc -O2 -Wall -o "$W/slow_clients" "$TOP/test/e2e/slow_clients.c"
ok $? "the attacking client builds"
psql -Xq -v ON_ERROR_STOP=1 -f "$TOP/test/helpers.sql" >/dev/null
token=$(sql "SELECT test.fake_registration()")
FP=http://127.0.0.1:$ELMO_HTTP_PORT/oscp/fp/2.0
deadline=$((SECONDS + 15))
until [ "$(http_status -X POST -H 'Content-Type: application/json' -H "Authorization: Token $token" -H "X-Request-ID: SLOW-WARMUP" \
          --data-binary '{"offline_mode_at":"2030-01-01T00:00:00+08:00"}' "$FP/heartbeat")" = 204 ] \
      || [ $SECONDS -ge $deadline ]; do sleep 0.05; done
sql "SELECT test.emergency_body('SLOW-G1', now() + interval '20 min', now() + interval '1 hour', 50)" > "$W/body.json"

# probe MODE [ADDRESS]: what one client sees (perl: sockets bound to a source address)
probe() {
  perl -MIO::Socket::INET -MTime::HiRes=time,sleep -e '
    my ($mode, $port, $from, $token, $body) = @ARGV;
    sub conn { IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $port, LocalAddr => $_[0] // $from, Proto => "tcp") or die "connect: $!" }
    sub closed { my $n = 0; for my $s (@_) { my $r = ""; vec($r, fileno $s, 1) = 1; $n++ if select($r, undef, undef, 0) && !sysread($s, my $x, 1) } $n }
    sub forecast { my ($rid) = @_; "POST /oscp/fp/2.0/update_group_capacity_forecast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Token $token\r\nX-Request-ID: $rid\r\nContent-Length: " . length($body) . "\r\n\r\n$body" }
    sub status { my ($s) = @_; my $buf = ""; while ($buf !~ /\r\n\r\n/) { my $n = sysread($s, $buf, 4096, length $buf); return 0 unless $n } $buf =~ m{^HTTP/1\.\d (\d+)} ? $1 : -1 }
    # trickle: whole head, then a byte every 100 ms until the server closes; prints the seconds it took
    if ($mode =~ /^trickle-(headers|body)$/) {
      my $s = conn(); my $t0 = time;
      my $head = $1 eq "headers" ? "POST /oscp/fp/2.0/heartbeat HTTP/1.1\r\nHost: x\r\n"
               : "POST /oscp/fp/2.0/update_group_capacity_forecast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Token $token\r\nX-Request-ID: SLOWPROBE\r\nContent-Length: 100000\r\n\r\n";
      $SIG{PIPE} = "IGNORE"; syswrite($s, $head);
      while (time - $t0 < 20) { sleep 0.1; last unless syswrite($s, "a"); my $r = ""; vec($r, fileno $s, 1) = 1;
        if (select($r, undef, undef, 0)) { last unless sysread($s, my $x, 4096) } }
      printf "%.1f\n", time - $t0;
    }
    # keepalive: a forecast, 1.5 s idle on the same connection, another: both statuses
    if ($mode eq "keepalive") {
      my $s = conn(); syswrite($s, forecast("SLOWKA1")); my $a = status($s);
      sleep 1.5; syswrite($s, forecast("SLOWKA2")); print "$a ", status($s), "\n";
    }
    # hangup: 3 clients hang up in the middle of their headers (the bytes and the end of the stream
    # arrive together); then 3 new ones: how many closed within 0.3 s
    if ($mode eq "hangup") {
      for (1 .. 3) { my $s = conn(); syswrite($s, "POST /oscp/fp/2.0/heartbeat HTTP/1.1\r\nHost: x\r\nX-A: 1"); close($s) }
      sleep 0.5; my @s = map { conn() } 1 .. 3; sleep 0.3; my $closed = 0;
      for my $s (@s) { my $r = ""; vec($r, fileno $s, 1) = 1; $closed++ if select($r, undef, undef, 0) && !sysread($s, my $x, 1) }
      print "$closed\n";
    }
    # limit: 4 idle connections from one address: how many the server closed within 0.5 s
    if ($mode eq "limit") {
      my @s = map { conn() } 1 .. 4; sleep 0.5; my $closed = 0;
      for my $s (@s) { my $r = ""; vec($r, fileno $s, 1) = 1; $closed++ if select($r, undef, undef, 0) && !sysread($s, my $x, 1) }
      print "$closed\n";
    }
    # limit-among: one idle connection from each of 40 addresses (127.0.0.20-59), then four from
    # each of five more (127.0.0.60-64): how many of those twenty, and of the forty, the server closed
    if ($mode eq "limit-among") {
      my @others = map { conn("127.0.0.$_") } 20 .. 59; sleep 0.2;
      my @s = map { my $a = $_; map { conn("127.0.0.$a") } 1 .. 4 } 60 .. 64; sleep 0.5;
      print closed(@s), " ", closed(@others), "\n";
    }' "$1" "$ELMO_HTTP_PORT" "${2:-127.0.0.5}" "$token" "$(cat "$W/body.json")"
}

log_from=$(($(stat -c %s "$PGHOST/server.log") + 1))
psql -Xq -c "ALTER SYSTEM SET elmo_oscp.max_connections_per_client = 3" -c "SELECT pg_reload_conf()" >/dev/null
deadline=$((SECONDS + 15))
until [ "$(probe limit 127.0.0.6)" = 1 ] || [ $SECONDS -ge $deadline ]; do :; done
is "$(probe limit 127.0.0.5)" 1 "max_connections_per_client 3: the fourth connection from one address is closed at once"
is "$(probe limit-among)" "5 0" "the same for each of five addresses among connections from forty others, which are kept"
is "$(probe hangup 127.0.0.7)" 0 "clients that hung up mid-headers free their places at once"
psql -Xq -c "ALTER SYSTEM SET elmo_oscp.request_receive_timeout = '1s'" -c "SELECT pg_reload_conf()" >/dev/null
deadline=$((SECONDS + 30))
until awk -v t="$(probe trickle-headers)" 'BEGIN { exit !(t < 3) }' || [ $SECONDS -ge $deadline ]; do :; done
t=$(probe trickle-headers)
awk -v t="$t" 'BEGIN { exit !(t >= 0.9 && t < 3) }'; ok $? "headers trickled a byte every 100 ms: closed after ${t} s (request_receive_timeout 1 s)"
t=$(probe trickle-body)
awk -v t="$t" 'BEGIN { exit !(t >= 0.9 && t < 3) }'; ok $? "a body trickled after whole headers: closed after ${t} s"
is "$(probe keepalive 127.0.0.1)" "204 204" "a kept-alive connection idle 1.5 s (more than the receive deadline) serves its next forecast"
is "$(sql "SELECT count(*) FROM elmo_received_message WHERE request_id = 'SLOWPROBE'")" 0 "the trickled forecast was not stored"
psql -Xq -c "ALTER SYSTEM RESET elmo_oscp.request_receive_timeout" -c "ALTER SYSTEM RESET elmo_oscp.max_connections_per_client" \
     -c "SELECT pg_reload_conf()" >/dev/null
deadline=$((SECONDS + 15))
until [ "$(probe limit 127.0.0.6)" = 0 ] || [ $SECONDS -ge $deadline ]; do :; done
is "$(probe limit 127.0.0.6)" 0 "back to the defaults: four connections from one address are kept"

# run_attack PREFIX: the figures of one run, as "key value" words
run_attack() {
  "$W/slow_clients" "$ELMO_HTTP_PORT" "$token" "$W/body.json" "$1" \
    --attackers 1000 --addresses 10 --warmup 3000 --forecasts 200 --interval 50 2> "$W/$1.err"
}
field() { awk -v k="$2" '{ for (i = 1; i < NF; i++) if ($i == k) print $(i + 1) }' <<< "$1" | head -n1; }

# ---------------------------------------------------------------- any client admitted
out=$(run_attack SLOWANY)
diag "$out"
elmo=$(grep '^elmo' <<< "$out"); attack=$(grep '^attack' <<< "$out")
is "$(field "$elmo" answered_204)" 200 "any client admitted: all 200 forecasts answered 204 under attack"
p99=$(field "$elmo" p99_ms)
[ -n "$p99" ] && [ "$p99" -lt 1000 ]; ok $? "any client admitted: p99 ${p99} ms < 1000 ms (max $(field "$elmo" max_ms) ms)"
is "$(sql "SELECT count(*) FROM elmo_received_message WHERE request_id LIKE 'SLOWANY%'")" 200 "all 200 stored"
closed=$(field "$attack" closed_by_server)
[ -n "$closed" ] && [ "$closed" -ge 1000 ]; ok $? "the listener closed attacking connections ($closed closed, $(field "$attack" opened) opened)"
tail -c +"$log_from" "$PGHOST/server.log" | grep -q "elmo_oscp listener: refused [0-9]* connections"; ok $? "the server log says what the guard refused and closed"

# ---------------------------------------------------------------- only ELMO admitted
psql -Xq -c "ALTER SYSTEM SET elmo_oscp.allowed_clients = '127.0.0.1, 10.0.0.0/8'" -c "SELECT pg_reload_conf()" >/dev/null
deadline=$((SECONDS + 15))
until [ "$(curl -s -o /dev/null -w '%{http_code}' --interface 127.0.0.2 "$FP/health")" = 000 ] || [ $SECONDS -ge $deadline ]; do sleep 0.05; done
is "$(curl -s -o /dev/null -w '%{http_code}' --interface 127.0.0.2 "$FP/health")" 000 "allowed_clients set: 127.0.0.2 is refused when it connects"
is "$(http_status "$FP/health")" 200 "... and 127.0.0.1 is served"
out=$(run_attack SLOWONLY)
diag "$out"
elmo=$(grep '^elmo' <<< "$out")
is "$(field "$elmo" answered_204)" 200 "only ELMO admitted: all 200 forecasts answered 204 under attack"
p99=$(field "$elmo" p99_ms)
[ -n "$p99" ] && [ "$p99" -lt 100 ]; ok $? "only ELMO admitted: p99 ${p99} ms < 100 ms (max $(field "$elmo" max_ms) ms)"
is "$(sql "SELECT count(*) FROM elmo_received_message WHERE request_id LIKE 'SLOWONLY%'")" 200 "all 200 stored"
psql -Xq -c "ALTER SYSTEM SET elmo_oscp.allowed_clients = '127.0.0.1/33'" 2> "$W/err" >/dev/null
grep -q 'is not an IP address or a CIDR range' "$W/err"; ok $? "a bad allowed_clients is refused with a clear message"
