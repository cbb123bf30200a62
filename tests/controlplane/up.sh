#!/usr/bin/env bash
# Starts a real etcd + kube-apiserver on 127.0.0.1 (free ports, RBAC on) in
# DIR, writes DIR/kubeconfig and returns once /readyz answers 200.
#
#   up.sh DIR [WATCH_PID]
#
# DIR/pids holds the process ids; down.sh DIR stops them and removes DIR.
# With WATCH_PID, a watchdog stops both servers as soon as that process is
# gone, so a test binary that panics or is killed leaves nothing running.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:?usage: up.sh DIR [WATCH_PID]}
watch_pid=${2:-}
timeout_s=${CONTROLPLANE_START_TIMEOUT:-120}

bin=$("$here/build.sh")
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

etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
start=$(date +%s%N)

"$bin/etcd" --name=winston --data-dir="$dir/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
  --initial-cluster="winston=http://127.0.0.1:$peer_port" \
  --unsafe-no-fsync=true --log-level=warn >"$dir/etcd.log" 2>&1 &
etcd_pid=$!
echo "$etcd_pid" > "$dir/pids"

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
echo "$api_pid" >> "$dir/pids"

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

deadline=$(( $(date +%s) + timeout_s ))
until [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$pki/ca.crt" "https://127.0.0.1:$api_port/readyz")" = 200 ]; do
  if ! kill -0 "$api_pid" 2>/dev/null || ! kill -0 "$etcd_pid" 2>/dev/null; then
    echo "up.sh: a control-plane process exited; last log lines:" >&2
    tail -n 20 "$dir/etcd.log" "$dir/kube-apiserver.log" >&2
    exit 1
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "up.sh: kube-apiserver not ready after ${timeout_s}s; last log lines:" >&2
    tail -n 20 "$dir/kube-apiserver.log" >&2
    exit 1
  fi
  sleep 0.2
done
echo "up.sh: control plane ready in $(( ($(date +%s%N) - start) / 1000000 )) ms at https://127.0.0.1:$api_port (kubeconfig: $dir/kubeconfig)" >&2
echo "$dir/kubeconfig"
