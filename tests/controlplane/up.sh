#!/usr/bin/env bash
# Starts a real etcd + kube-apiserver on 127.0.0.1 (free ports, RBAC on) in
# DIR, writes DIR/kubeconfig and returns once /readyz answers 200.
#
#   up.sh DIR [WATCH_PID]
#
# DIR/pids holds the process ids, one per line (etcd, kube-apiserver, then the
# watchdog); down.sh DIR stops them and removes DIR.
# With WATCH_PID, a watchdog stops both servers as soon as that process is
# gone, so a test binary that panics or is killed leaves nothing running.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:?usage: up.sh DIR [WATCH_PID]}
watch_pid=${2:-}
timeout_s=${CONTROLPLANE_START_TIMEOUT:-120}

bin=$("$here/build.sh")

# On a failed start, stop whatever was started so no server outlives it.
cleanup_on_failure() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -f "$dir/pids" ]; then
    # shellcheck disable=SC2046
    kill $(cat "$dir/pids") 2>/dev/null || true
  fi
}
trap cleanup_on_failure EXIT
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pki=$dir/pki
mkdir -p "$pki" "$dir/etcd"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# --- certificates: one CA, a serving cert, an admin client in system:masters, SA keys
if [ ! -f "$pki/admin.crt" ]; then
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=winston-test-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
      -keyout apiserver.key -out apiserver.csr 2>/dev/null
    printf "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n" > apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=admin/O=system:masters" \
      -keyout admin.key -out admin.csr 2>/dev/null
    printf "extendedKeyUsage=clientAuth\n" > client.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
      -extfile client.ext -out admin.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
fi

# Three distinct free ports. A port found free can be taken before its server
# binds it (an outgoing connection's ephemeral port, another test's server), so
# etcd is started alone, waited for, and started again on new ports if it
# died; so is the apiserver.
pick_etcd_ports() {
  etcd_port=$(free_port); peer_port=$(free_port)
  while [ "$peer_port" = "$etcd_port" ]; do peer_port=$(free_port); done
}
pick_api_port() {
  api_port=$(free_port)
  while [ "$api_port" = "$etcd_port" ] || [ "$api_port" = "$peer_port" ]; do api_port=$(free_port); done
}

start=$(date +%s%N)
etcd_pid=
for attempt in 1 2 3; do
  pick_etcd_ports
  rm -rf "$dir/etcd"; mkdir -p "$dir/etcd"
  "$bin/etcd" --name=winston --data-dir="$dir/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="winston=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync=true --log-level=warn >"$dir/etcd.log" 2>&1 &
  etcd_pid=$!
  deadline=$(( $(date +%s) + timeout_s ))
  until curl -sf -m 2 -o /dev/null "http://127.0.0.1:$etcd_port/health"; do
    if ! kill -0 "$etcd_pid" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
      echo "up.sh: etcd did not start on 127.0.0.1:$etcd_port (attempt $attempt); last log lines:" >&2
      tail -n 20 "$dir/etcd.log" >&2
      kill "$etcd_pid" 2>/dev/null || true
      wait "$etcd_pid" 2>/dev/null || true
      etcd_pid=
      break
    fi
    sleep 0.1
  done
  [ -n "$etcd_pid" ] && break
done
if [ -z "$etcd_pid" ]; then
  echo "up.sh: etcd failed to start three times" >&2
  exit 1
fi
echo "$etcd_pid" > "$dir/pids"

# The apiserver: started, waited for, and started again on a new port if its
# port was taken in the meantime (etcd's failures are not retried here).
api_pid=
for attempt in 1 2 3; do
  pick_api_port
  "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --cert-dir="$pki" --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --authorization-mode=RBAC \
    --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true \
    --disable-admission-plugins=ServiceAccount \
    --service-account-issuer="https://127.0.0.1:$api_port/" \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --endpoint-reconciler-type=none \
    >"$dir/kube-apiserver.log" 2>&1 &
  api_pid=$!
  printf "%s\n%s\n" "$etcd_pid" "$api_pid" > "$dir/pids"
  deadline=$(( $(date +%s) + timeout_s ))
  until [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' --cacert "$pki/ca.crt" "https://127.0.0.1:$api_port/readyz")" = 200 ]; do
    if ! kill -0 "$etcd_pid" 2>/dev/null; then
      echo "up.sh: etcd exited; last log lines:" >&2
      tail -n 20 "$dir/etcd.log" "$dir/kube-apiserver.log" >&2
      exit 1
    fi
    if ! kill -0 "$api_pid" 2>/dev/null; then
      echo "up.sh: kube-apiserver exited (attempt $attempt); last log lines:" >&2
      tail -n 20 "$dir/kube-apiserver.log" >&2
      if grep -q "address already in use" "$dir/kube-apiserver.log" && [ "$attempt" -lt 3 ]; then
        api_pid=
        break
      fi
      exit 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "up.sh: kube-apiserver not ready after ${timeout_s}s; last log lines:" >&2
      tail -n 20 "$dir/kube-apiserver.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  [ -n "$api_pid" ] && break
done

if [ -n "$watch_pid" ]; then
  # Watchdog: poll once a second (this is a liveness check, not a test wait).
  nohup bash -c "while kill -0 $watch_pid 2>/dev/null && kill -0 $api_pid 2>/dev/null; do sleep 1; done; kill $api_pid $etcd_pid 2>/dev/null; sleep 2; kill -9 $api_pid $etcd_pid 2>/dev/null; rm -rf '$dir'" \
    >/dev/null 2>&1 &
  echo $! >> "$dir/pids"
fi

ca_b64=$(base64 -w0 < "$pki/ca.crt")
crt_b64=$(base64 -w0 < "$pki/admin.crt")
key_b64=$(base64 -w0 < "$pki/admin.key")
cat > "$dir/kubeconfig" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: winston-local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $ca_b64
users:
- name: admin
  user:
    client-certificate-data: $crt_b64
    client-key-data: $key_b64
contexts:
- name: winston-local
  context:
    cluster: winston-local
    user: admin
    namespace: default
current-context: winston-local
KCFG

echo "up.sh: control plane ready in $(( ($(date +%s%N) - start) / 1000000 )) ms at https://127.0.0.1:$api_port (kubeconfig: $dir/kubeconfig)" >&2
echo "$dir/kubeconfig"
