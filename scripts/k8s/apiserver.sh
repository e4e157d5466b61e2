#!/usr/bin/env bash
# A real Kubernetes API server (kube-apiserver + etcd) on loopback, for xlb's tests, and a
# real kube-proxy for the lab's worker nodes. No mocks: the same binaries as a cluster's
# control plane and nodes, minus the controllers and kubelets.
#
#   apiserver.sh build               build kube-apiserver, kube-proxy, kubectl, etcd and helm
#                                    at pinned versions into the cache (once; later: no-ops)
#   apiserver.sh bin                 build (as above), then print the binaries' directory
#   apiserver.sh start DIR           start etcd + kube-apiserver on 127.0.0.1 with all state
#                                    under DIR, wait for /readyz, write kubeconfigs and DIR/env
#   apiserver.sh stop DIR            stop both (waits for them to exit); DIR keeps the data
#   apiserver.sh stop-apiserver DIR  stop only kube-apiserver (etcd and the data stay)
#   apiserver.sh start-apiserver DIR start kube-apiserver again, same flags, same port
#
# Every subcommand is idempotent: `start` on a running DIR reports and returns, `start` on a
# stopped DIR brings the same cluster (same CA, tokens, data, ports when still free) back,
# `stop` on a stopped DIR does nothing.
#
# kube-proxy is only built here, never started: tests/support/cluster.rs runs one per worker
# node of the netns lab (nftables mode, inside the worker's namespace, as the admin through
# the kubeconfig this script writes). It runs the nft binary (Debian's nftables, which
# scripts/setup.sh installs).
#
# What is NOT there: no kube-controller-manager, scheduler or kubelet. So nothing
# reconciles objects: no EndpointSlices are derived from Services (create them yourself), no
# garbage collection of owned objects, a deleted namespace stays Terminating forever, no
# ServiceAccount tokens are minted (the ServiceAccount admission plugin is disabled; the xlb
# identity is a static token instead, see below). The API server itself does run its own
# loops: RBAC bootstrap roles, the default/kubernetes Service, ClusterIP allocation from
# 10.96.0.0/16 and fd96::/112 (dual-stack, so that tests can make IPv6 Services; bookkeeping
# only, no traffic ever goes there).
#
# Environment:
#   XLB_K8S_CACHE          where binaries are cached (default ~/.cache/xlb/k8s); they land
#                          in $XLB_K8S_CACHE/<k8s-version>/bin/
#   XLB_K8S_START_TIMEOUT  seconds to wait for etcd, then for /readyz (default 120)
#
# Layout of DIR (created as needed; must not contain whitespace):
#   env                    KEY=VALUE lines, see write_env (kubeconfigs, URL, tokens, pids)
#   admin.kubeconfig       user "admin", group system:masters (can do anything)
#   xlb.kubeconfig         user system:serviceaccount:xlb-system:xlb, the ServiceAccount
#                          groups; has no rights until RBAC grants them (RBAC is enforced)
#   ports                  the ports picked on first start, reused later while free
#   pki/                   CA, API server serving cert, service-account key pair, tokens
#   etcd/                  etcd's data directory (the cluster state)
#   logs/                  etcd.log, kube-apiserver.log (appended to on each start)
#   etcd.pid, kube-apiserver.pid
#   audit.log, audit-policy.yaml  every API write, one JSON line each (who, verb, what)
#
# Requirements: Go >= 1.25 for `build` (etcd and helm ask for go 1.26.0; an older go
# fetches that toolchain through the Go module proxy by itself), openssl and curl (installed
# with apt when missing and running as root), ss (iproute2) or bash's /dev/tcp for ports.
#
# First `build`, measured on the dev VM (2 cores, 23 GiB RAM, Go 1.26.8) with an empty Go
# module cache and an empty Go build cache: 9 min wall clock (8 min 59 s; 807 s user CPU),
#   kube-apiserver 348 s (including most of the module downloads), kubectl 34 s,
#   etcd 45 s, helm 111 s; peak RSS of the compiler/linker 1.8 GB.
# kube-proxy, added later to the same module (go.mod's tool block; its go.sum entries by
# `go mod tidy`), measured alone on that VM with the module cache filled and an empty build
# cache: 193 s wall clock (230 s user CPU, peak RSS 1.2 GB); on top of a build cache that
# already holds kube-apiserver's packages, 9 s. Adding it changed go.mod/go.sum, so the next
# `build` rebuilt kube-apiserver and kubectl too: 29 s for the three with a warm build cache.
# Binaries (stripped, static): kube-apiserver 103 MB, kube-proxy 70 MB, helm 62 MB, kubectl
# 59 MB, etcd 27 MB, 320 MB in all. Go's caches after it: module cache 1.2 GB, build cache
# 3.1 GB. Later
# `build`s are a no-op (~0.05 s); `start` then takes ~5 s (first time, with key generation)
# and ~2.5 s on an existing DIR.
set -euo pipefail

# ---- Pinned versions. They must match the go.mod files next to this script (checked in
# build); bump both together and rerun `go mod tidy` in the module directory.
K8S_VERSION=v1.35.4    # k8s.io/kubernetes, scripts/k8s/build/go.mod (+ k8s.io/* staging v0.35.4)
ETCD_VERSION=v3.6.16   # go.etcd.io/etcd/server/v3, scripts/k8s/build-etcd/go.mod
HELM_VERSION=v3.22.0   # helm.sh/helm/v3, scripts/k8s/build-helm/go.mod
# Upstream's release builds stamp the version into the binaries (what /version, kubectl
# version and helm version print). The tag's date stands in for the build date, so that two
# builds of the same pins give the same binary.
K8S_BUILD_DATE=2026-04-15T18:01:22Z
# helm stamps the Kubernetes minor version its client libraries come from (k8s.io/client-go
# v0.37.0 for helm v3.22.0) as the default .Capabilities.KubeVersion of `helm template`.
# Pass `--kube-version 1.35.4` to helm template to render for this API server instead.
HELM_K8S_MAJOR=1
HELM_K8S_MINOR=37

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${XLB_K8S_CACHE:-$HOME/.cache/xlb/k8s}
BIN=$CACHE/$K8S_VERSION/bin
START_TIMEOUT=${XLB_K8S_START_TIMEOUT:-120}

log() { echo "k8s: $*" >&2; }
die() { echo "k8s: error: $*" >&2; exit 1; }

usage() {
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# Milliseconds since the epoch, for "ready in N s".
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# ----------------------------------------------------------------------------------------
# build
# ----------------------------------------------------------------------------------------

# A short digest of a module directory's go.mod + go.sum: a cached binary is reused only if
# it was built from exactly these pins (the stamp file next to it records the digest).
module_digest() { cat "$1/go.mod" "$1/go.sum" | sha256sum | cut -c1-16; }

# build_binary NAME MODULE VERSION MODULE_DIR PACKAGE TAGS LDFLAGS
build_binary() {
  local name=$1 module=$2 version=$3 moddir=$4 pkg=$5 tags=$6 ldflags=$7
  local stamp="$BIN/.$name.stamp" want
  want="$version $(module_digest "$moddir")"
  if [[ -x $BIN/$name && -f $stamp && $(<"$stamp") == "$want" ]]; then
    return 0
  fi
  # The pin in this script and the one in go.mod must agree, or the cache path lies.
  grep -Eq "^(require)?[[:space:]]*${module//./\\.} ${version//./\\.}( |\$)" "$moddir/go.mod" ||
    die "$moddir/go.mod does not pin $module $version (keep it and the versions in $0 in step)"
  log "building $name $version (first time only, a few minutes)"
  local t0=$SECONDS tmp="$BIN/.$name.tmp.$$"
  # Static binaries (CGO_ENABLED=0) like upstream's releases; -mod=readonly: go.sum is the
  # pin, never rewritten; GOWORK=off: ignore any go.work above the checkout.
  if ! (cd "$moddir" && CGO_ENABLED=0 GOWORK=off go build -mod=readonly -trimpath \
          -tags="$tags" -ldflags="-s -w $ldflags" -o "$tmp" "$pkg"); then
    rm -f "$tmp"
    die "building $name failed (see the go output above)"
  fi
  mv -f "$tmp" "$BIN/$name"
  echo "$want" >"$stamp"
  log "built $name in $((SECONDS - t0)) s: $BIN/$name ($(du -h "$BIN/$name" | cut -f1))"
}

cmd_build() {
  command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null || die "go is not installed (Go >= 1.25 is needed to build the binaries)"
  mkdir -p "$BIN"
  # One build at a time per cache (tests may call `build` in parallel); the lock lives in a
  # subshell so that no server started later inherits it.
  (
    flock 9
    # The ldflags Kubernetes' hack/lib/version.sh passes (gitCommit is unknown without the
    # git repository and keeps its placeholder), for both version packages.
    local ver=${K8S_VERSION#v} kv="" pkgv
    local major=${ver%%.*} minor=${ver#*.}
    minor=${minor%%.*}
    for pkgv in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      kv+=" -X $pkgv.gitVersion=$K8S_VERSION -X $pkgv.gitMajor=$major -X $pkgv.gitMinor=$minor"
      kv+=" -X $pkgv.buildDate=$K8S_BUILD_DATE"
    done
    # Tags as in Kubernetes' release builds (hack/lib/golang.sh: selinux,notest and, for
    # non-debug builds, grpcnotrace).
    local ktags=selinux,notest,grpcnotrace
    build_binary kube-apiserver k8s.io/kubernetes "$K8S_VERSION" "$HERE/build" k8s.io/kubernetes/cmd/kube-apiserver "$ktags" "$kv"
    build_binary kube-proxy k8s.io/kubernetes "$K8S_VERSION" "$HERE/build" k8s.io/kubernetes/cmd/kube-proxy "$ktags" "$kv"
    build_binary kubectl k8s.io/kubernetes "$K8S_VERSION" "$HERE/build" k8s.io/kubernetes/cmd/kubectl "$ktags" "$kv"
    build_binary etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$HERE/build-etcd" go.etcd.io/etcd/server/v3 "" ""
    local hv="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    local p
    for p in pkg/lint/rules pkg/chartutil; do
      hv+=" -X helm.sh/helm/v3/$p.k8sVersionMajor=$HELM_K8S_MAJOR -X helm.sh/helm/v3/$p.k8sVersionMinor=$HELM_K8S_MINOR"
    done
    build_binary helm helm.sh/helm/v3 "$HELM_VERSION" "$HERE/build-helm" helm.sh/helm/v3/cmd/helm "" "$hv"
  ) 9>"$CACHE/.build.lock"
}

# ----------------------------------------------------------------------------------------
# start / stop
# ----------------------------------------------------------------------------------------

# Install a Debian package when its command is missing (root only).
need_cmd() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null && return 0
  [[ $(id -u) -eq 0 ]] || die "$cmd is missing; install the Debian package $pkg"
  log "installing $pkg"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
}

# set_dir DIR [create]: absolute DIR (created only with "create"), locked against
# concurrent start/stop on it. The lock is fd 8; servers are started with fd 8 closed so
# they do not hold it.
set_dir() {
  [[ -n ${1:-} ]] || usage
  [[ $1 != *[[:space:]]* ]] || die "DIR must not contain whitespace: '$1'"
  if [[ ${2:-} == create ]]; then
    mkdir -p "$1"
  else
    [[ -d $1 ]] || die "no such directory: $1"
  fi
  DIR=$(cd "$1" && pwd)
  PKI=$DIR/pki
  exec 8>"$DIR/.lock"
  flock 8
}

# Certificates and tokens, generated once per DIR and then kept, so that a restart keeps
# the same CA (kubeconfigs stay valid) and service-account signing key.
gen_pki() {
  [[ -f $PKI/complete ]] && return 0
  need_cmd openssl openssl
  log "generating CA, serving certificate, service-account keys and tokens in $PKI"
  local tmp="$DIR/.pki.tmp"
  rm -rf "$tmp"
  mkdir -m 700 "$tmp"
  (
    umask 077
    cd "$tmp"
    # CA (RSA 2048, 10 years).
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=xlb-test-kubernetes-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    # Serving certificate for https://127.0.0.1 and https://localhost (plus the in-cluster
    # names, harmless, in case a client insists on them).
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    cat >apiserver.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out apiserver.crt -days 3650 -extfile apiserver.ext 2>/dev/null
    rm -f apiserver.csr apiserver.ext ca.srl
    # Service-account token signing key pair (kube-apiserver signs, and verifies, tokens).
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    # Static bearer tokens (--token-auth-file): token,user,uid,"groups".
    openssl rand -hex 24 >admin.token
    openssl rand -hex 24 >xlb.token
    printf '%s,admin,admin-uid,"system:masters"\n' "$(<admin.token)" >tokens.csv
    # The xlb ServiceAccount's identity, exactly as a ServiceAccount token would authenticate
    # (username and groups), so RBAC bindings to ServiceAccount xlb-system/xlb apply to it.
    printf '%s,system:serviceaccount:xlb-system:xlb,xlb-sa-uid,"system:serviceaccounts,system:serviceaccounts:xlb-system,system:authenticated"\n' \
      "$(<xlb.token)" >>tokens.csv
    touch complete  # marks a finished generation
  )
  rm -rf "$PKI"
  mv "$tmp" "$PKI"
}

# port_listening PORT: something listens on the port (on any address).
port_listening() {
  if command -v ss >/dev/null; then
    [[ -n $(ss -Htln "sport = :$1") ]]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

# pick_port EXCLUDED...: a port nobody listens on, from 20000-31999 (below Linux's ephemeral
# range 32768-60999, so an outgoing connection cannot take it between here and the bind).
pick_port() {
  local p _
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    [[ " $* " == *" $p "* ]] && continue
    port_listening "$p" || { echo "$p"; return 0; }
  done
  die "found no free port in 20000-31999"
}

save_ports() {
  printf 'ETCD_CLIENT_PORT=%s\nETCD_PEER_PORT=%s\nAPISERVER_PORT=%s\n' \
    "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" >"$DIR/ports"
}

load_ports() {
  ETCD_CLIENT_PORT="" ETCD_PEER_PORT="" APISERVER_PORT=""
  # DIR/ports is written at run time (save_ports), so there is no file for shellcheck to follow.
  # shellcheck disable=SC1091
  [[ -f $DIR/ports ]] && source "$DIR/ports"
  return 0
}

# running NAME: prints the pid of DIR's NAME server if it is alive. The pid is only trusted
# if that process's command line mentions DIR (pids get reused); zombies count as dead.
running() {
  local pidfile="$DIR/$1.pid" pid state
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ $state != Z && $state != X ]] || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$DIR/" || return 1
  echo "$pid"
}

# launch NAME CMD...: start CMD in the background, detached (own session, stdin from
# /dev/null, output appended to logs/NAME.log, so a caller that waits for our stdout to
# close, like a test harness, is not held up), and record its pid.
launch() {
  local name=$1; shift
  mkdir -p "$DIR/logs"
  echo "=== $(date -u +%FT%TZ) apiserver.sh starts $name" >>"$DIR/logs/$name.log"
  # A background job of a non-interactive shell is not a process group leader, so setsid
  # execs in place and $! is the server's own pid.
  setsid "$@" </dev/null >>"$DIR/logs/$name.log" 2>&1 8>&- 9>&- &
  echo $! >"$DIR/$name.pid"
}

# stop_server NAME: SIGTERM, wait up to 30 s for a clean exit, then SIGKILL.
stop_server() {
  local name=$1 pid _
  if pid=$(running "$name"); then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
      running "$name" >/dev/null || break
      sleep 0.1
    done
    if running "$name" >/dev/null; then
      log "$name did not exit within 30 s of SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 50); do running "$name" >/dev/null || break; sleep 0.1; done
    fi
  fi
  rm -f "$DIR/$name.pid"
}

log_tail() {
  local f="$DIR/logs/$1.log"
  [[ -f $f ]] || return 0
  echo "---- last 40 lines of $f ----" >&2
  tail -n 40 "$f" >&2
  echo "----" >&2
}

# A server that exited because its port was taken since we picked it.
bind_failed() { tail -n 60 "$DIR/logs/$1.log" 2>/dev/null | grep -q "address already in use"; }

# wait_for NAME CHECK...: run CHECK until it succeeds (returns 0), the server exits
# (returns 1) or START_TIMEOUT passes (returns 2).
wait_for() {
  local name=$1; shift
  local deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    "$@" >/dev/null 2>&1 && return 0
    running "$name" >/dev/null || return 1
    sleep 0.2
  done
  return 2
}

etcd_healthy() {
  curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'
}

apiserver_ready() {
  curl -fsS --max-time 2 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(<"$PKI/admin.token")" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" | grep -qx ok
}

start_etcd() {
  local try rc
  for try in 1 2 3; do
    # Reuse the saved ports while they are free (etcd records its peer URL in its data).
    if [[ -z $ETCD_CLIENT_PORT ]] || port_listening "$ETCD_CLIENT_PORT"; then
      ETCD_CLIENT_PORT=$(pick_port "$ETCD_PEER_PORT" "$APISERVER_PORT")
    fi
    if [[ -z $ETCD_PEER_PORT ]] || port_listening "$ETCD_PEER_PORT"; then
      ETCD_PEER_PORT=$(pick_port "$ETCD_CLIENT_PORT" "$APISERVER_PORT")
    fi
    save_ports
    mkdir -p "$DIR/etcd"
    chmod 700 "$DIR/etcd"
    # --unsafe-no-fsync: no fsync on writes; data survives a process exit or kill (it is in
    # the page cache), only a machine crash could lose it: fine for tests, much faster.
    launch etcd "$BIN/etcd" \
      --name=xlb-test \
      --data-dir="$DIR/etcd" \
      --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
      --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
      --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-cluster="xlb-test=http://127.0.0.1:$ETCD_PEER_PORT" \
      --unsafe-no-fsync \
      --log-level=warn
    rc=0; wait_for etcd etcd_healthy || rc=$?
    case $rc in
      0) return 0 ;;
      1) if bind_failed etcd && ((try < 3)); then
           log "etcd lost a port race; picking other ports"
           ETCD_CLIENT_PORT="" ETCD_PEER_PORT=""
           continue
         fi
         log_tail etcd; die "etcd exited during startup" ;;
      2) log_tail etcd; stop_server etcd; die "etcd was not healthy within $START_TIMEOUT s" ;;
    esac
  done
}

# start_apiserver SAME_PORT: SAME_PORT=1 (start-apiserver) insists on the saved port.
start_apiserver() {
  local same_port=$1 try rc
  for try in 1 2 3; do
    if [[ -z $APISERVER_PORT ]] || port_listening "$APISERVER_PORT"; then
      if [[ $same_port == 1 && -n $APISERVER_PORT ]]; then
        die "port $APISERVER_PORT (this API server's) is taken by another process"
      fi
      [[ -n $APISERVER_PORT ]] && log "port $APISERVER_PORT is taken now; the API server moves (kubeconfigs are rewritten)"
      APISERVER_PORT=$(pick_port "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT")
    fi
    save_ports
    # Loopback only, HTTPS only (kube-apiserver has no insecure port any more), static
    # tokens for authentication, RBAC for authorization (so xlb's ClusterRole and bindings
    # are really enforced). --disable-admission-plugins=ServiceAccount: that plugin wants
    # the token controller of kube-controller-manager, which does not run here.
    # --endpoint-reconciler-type=none: the default reconciler publishes the advertise
    # address in default/kubernetes Endpoints, and 127.0.0.1 fails their validation ("may
    # not be in the loopback range"), an error logged every 10 s; nothing here needs them.
    # Audit: one JSON line per write (create/update/patch/delete) at Metadata level, so the
    # tests can count the API writes each identity makes (audit.log; reads are not logged).
    cat >"$DIR/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
POLICY
    launch kube-apiserver "$BIN/kube-apiserver" \
      --audit-policy-file="$DIR/audit-policy.yaml" \
      --audit-log-path="$DIR/audit.log" \
      --audit-log-mode=blocking \
      --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
      --bind-address=127.0.0.1 \
      --advertise-address=127.0.0.1 \
      --secure-port="$APISERVER_PORT" \
      --cert-dir="$PKI" \
      --tls-cert-file="$PKI/apiserver.crt" \
      --tls-private-key-file="$PKI/apiserver.key" \
      --token-auth-file="$PKI/tokens.csv" \
      --authorization-mode=RBAC \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-account-key-file="$PKI/sa.pub" \
      --service-account-signing-key-file="$PKI/sa.key" \
      --service-cluster-ip-range=10.96.0.0/16,fd96::/112 \
      --disable-admission-plugins=ServiceAccount \
      --endpoint-reconciler-type=none
    rc=0; wait_for kube-apiserver apiserver_ready || rc=$?
    case $rc in
      0) return 0 ;;
      1) if bind_failed kube-apiserver && ((try < 3)) && [[ $same_port != 1 ]]; then
           log "kube-apiserver lost a port race; picking another port"
           APISERVER_PORT=""
           continue
         fi
         log_tail kube-apiserver; die "kube-apiserver exited during startup" ;;
      2) log_tail kube-apiserver; log_tail etcd
         # Which readiness checks were still failing.
         curl -sS --max-time 2 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(<"$PKI/admin.token")" \
           "https://127.0.0.1:$APISERVER_PORT/readyz?verbose" 2>&1 | grep -v '^\[+\]' >&2 || true
         stop_server kube-apiserver
         die "kube-apiserver was not ready (/readyz) within $START_TIMEOUT s" ;;
    esac
  done
}

write_kubeconfig() {
  local file=$1 user=$2 token=$3
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: xlb-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    token: $token
contexts:
- name: $user@xlb-test
  context:
    cluster: xlb-test
    user: $user
current-context: $user@xlb-test
EOF
  chmod 600 "$file.tmp"
  mv -f "$file.tmp" "$file"
}

# DIR/env: plain KEY=VALUE lines (no quoting; DIR has no whitespace), also `source`-able
# (by a path with a slash: a bare `source env` finds /usr/bin/env on PATH first).
# A pid is empty when that server is not running. Rewritten by every start/stop.
write_env() {
  local etcd_pid apiserver_pid
  etcd_pid=$(running etcd) || etcd_pid=""
  apiserver_pid=$(running kube-apiserver) || apiserver_pid=""
  cat >"$DIR/env.tmp" <<EOF
KUBECONFIG_ADMIN=$DIR/admin.kubeconfig
KUBECONFIG_XLB=$DIR/xlb.kubeconfig
APISERVER_URL=https://127.0.0.1:$APISERVER_PORT
APISERVER_CA=$PKI/ca.crt
ADMIN_TOKEN=$(<"$PKI/admin.token")
XLB_TOKEN=$(<"$PKI/xlb.token")
ETCD_URL=http://127.0.0.1:$ETCD_CLIENT_PORT
ETCD_PID=$etcd_pid
APISERVER_PID=$apiserver_pid
K8S_BIN=$BIN
EOF
  mv -f "$DIR/env.tmp" "$DIR/env"
}

write_client_files() {
  write_kubeconfig "$DIR/admin.kubeconfig" admin "$(<"$PKI/admin.token")"
  write_kubeconfig "$DIR/xlb.kubeconfig" xlb "$(<"$PKI/xlb.token")"
  write_env
}

cmd_start() {
  set_dir "${1:-}" create
  local t0
  t0=$(now_ms)
  cmd_build
  need_cmd curl curl
  gen_pki
  load_ports
  if running etcd >/dev/null && [[ -n $ETCD_CLIENT_PORT ]] && etcd_healthy; then
    :
  else
    stop_server etcd  # a stale or unhealthy one, if any
    start_etcd
    # If kube-apiserver then fails to come up, do not leave this etcd behind.
    trap 'rc=$?; if ((rc != 0)); then stop_server etcd; fi' EXIT
  fi
  if running kube-apiserver >/dev/null && [[ -n $APISERVER_PORT ]] && apiserver_ready; then
    :
  else
    stop_server kube-apiserver
    start_apiserver 0
  fi
  write_client_files
  trap - EXIT
  local ms=$(( $(now_ms) - t0 ))
  printf 'k8s: api server ready on https://127.0.0.1:%s in %d.%d s; kubeconfigs in %s\n' \
    "$APISERVER_PORT" $((ms / 1000)) $((ms % 1000 / 100)) "$DIR"
}

cmd_start_apiserver() {
  set_dir "${1:-}"
  local t0
  t0=$(now_ms)
  [[ -f $PKI/complete && -f $DIR/ports ]] || die "$DIR was never started; use: $0 start $DIR"
  load_ports
  if ! { running etcd >/dev/null && etcd_healthy; }; then
    die "etcd of $DIR is not running; use: $0 start $DIR"
  fi
  if ! { running kube-apiserver >/dev/null && apiserver_ready; }; then
    stop_server kube-apiserver
    start_apiserver 1
  fi
  write_env
  local ms=$(( $(now_ms) - t0 ))
  printf 'k8s: api server ready on https://127.0.0.1:%s in %d.%d s; kubeconfigs in %s\n' \
    "$APISERVER_PORT" $((ms / 1000)) $((ms % 1000 / 100)) "$DIR"
}

cmd_stop_apiserver() {
  [[ -n ${1:-} && ! -d ${1:-} ]] && return 0  # nothing was ever started there
  set_dir "${1:-}"
  load_ports
  stop_server kube-apiserver
  [[ -f $PKI/complete && -n $APISERVER_PORT ]] && write_env
  return 0
}

cmd_stop() {
  [[ -n ${1:-} && ! -d ${1:-} ]] && return 0  # nothing was ever started there
  set_dir "${1:-}"
  load_ports
  stop_server kube-apiserver
  stop_server etcd
  [[ -f $PKI/complete && -n $APISERVER_PORT ]] && write_env
  return 0
}

case ${1:-} in
  build) cmd_build ;;
  bin) cmd_build >&2 && echo "$BIN" ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  start-apiserver) cmd_start_apiserver "${2:-}" ;;
  stop-apiserver) cmd_stop_apiserver "${2:-}" ;;
  *) usage ;;
esac
