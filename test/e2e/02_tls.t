# With elmo_oscp.tls_cert_file/tls_key_file set, the listener serves HTTPS (and not plain HTTP).
. "$(dirname "$0")/tap.sh"
plan 3
W=$(mktemp -d /tmp/elmo_tls.XXXXXX); chmod 755 "$W"; [ "$(id -u)" -eq 0 ] && chown postgres: "$W"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
  -addext "subjectAltName=IP:127.0.0.1" -keyout "$W/key.pem" -out "$W/cert.pem" >/dev/null 2>&1
chmod 644 "$W"/*.pem
(
  port=$(free_port 23100)
  cluster_init "$W/pg" postgres "$port" "elmo_oscp.tls_cert_file = '$W/cert.pem'" "elmo_oscp.tls_key_file = '$W/key.pem'"
  cluster_start
  deadline=$((SECONDS + 20))
  until curl -s -o /dev/null --cacert "$W/cert.pem" "https://127.0.0.1:$port/oscp/fp/2.0/health" || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
  is "$(http_status --cacert "$W/cert.pem" "https://127.0.0.1:$port/oscp/fp/2.0/health")" 200 "GET /health over HTTPS, certificate verified"
  curl -s --cacert "$W/cert.pem" "https://127.0.0.1:$port/oscp/fp/2.0/health" | grep -q '"status":"ok"'; ok $? "the health document comes over TLS"
  is "$(http_status "http://127.0.0.1:$port/oscp/fp/2.0/health")" 000 "plain HTTP is not served on the TLS port"
  cluster_stop fast
)
rm -rf "$W"
