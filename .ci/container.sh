#!/usr/bin/env bash
# CI check of the container image (Containerfile): builds it and runs it the way a user would.
#
#   1. tools      podman, runc and mmdebstrap from Debian's packages, when missing
#   2. base       localhost/hotswap-base: a Debian minbase (python3, venv, git, ssh-keygen, CA
#                 certificates) made by mmdebstrap from the mirror apt uses, since no registry is
#                 reachable; the host's extra CAs (/usr/local/share/ca-certificates/, the HTTPS proxy's)
#                 go into this CI base only, never into the Containerfile. Reused while its recipe and
#                 those certificates are unchanged (label hotswap.base.key).
#   3. build      podman build --build-arg BASE=localhost/hotswap-base -t localhost/hotswap .
#   4. serve      the image's default command (hotswap serve) on a copy of fleet-example/ mounted
#                 read-only, --network=host on a free 127.0.0.1 port; /health must answer 200, and the
#                 image's own HEALTHCHECK must pass
#   5. edge       `hotswap edge --control ...` from the same image registers with that control plane
#                 and is assigned modules
#   6. validate   `hotswap validate /fleet` inside the image
#   7. stop       SIGTERM to both servers: each must exit 0
# and removes every container it started, whatever happened. Each phase prints its duration; a failure names
# its phase. crun fails on this host's cgroups, so every podman call uses runc.
#
# Environment: HOTSWAP_REBUILD_BASE=1 rebuilds the base; HOTSWAP_DEBIAN_MIRROR overrides the mirror;
# PIP_INDEX_URL (http(s), without credentials) is passed to the build when set.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=localhost/hotswap-base
IMAGE=localhost/hotswap
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,git,openssh-client,ca-certificates
BASE_RECIPE=1 # bump when the mmdebstrap call below changes
RUN_ID="hotswap-ci-$$"
DEADLINE_SECONDS=60

phase="setup"
phase_started=$(date +%s%N)
script_started=$phase_started
work=""
containers=()

say() { echo "--- container: $*"; }

begin() {
    phase=$1
    phase_started=$(date +%s%N)
    say "$phase: $2"
}

end() {
    printf '    %s took %.1f s\n' "$phase" "$(($(date +%s%N) - phase_started))e-9"
}

fail() {
    echo "container.sh: $phase: $*" >&2
    exit 1
}

# Every podman call goes through here: runc as the runtime, and a failure that says what failed.
# Without systemd podman cannot schedule the image's HEALTHCHECK (phase serve runs it by hand) and
# says so on every run: that line is dropped, everything else on stderr is kept.
pm() {
    local status=0
    podman --runtime runc "$@" 2> >(grep -v 'unable to get systemd connection' >&2) || status=$?
    [ "$status" -eq 0 ] || fail "podman $1 failed (exit $status)"
}

cleanup() {
    local status=$?
    trap - EXIT
    set +e
    if [ "$status" -ne 0 ]; then
        for name in "${containers[@]}"; do
            podman --runtime runc container exists "$name" || continue
            echo "--- logs of $name" >&2
            podman --runtime runc logs --tail 40 "$name" >&2 2>&1
        done
    fi
    for name in "${containers[@]}"; do
        podman --runtime runc rm --force --time 5 "$name" >/dev/null 2>&1
    done
    # Nothing of ours may outlive the script.
    if [ "${#containers[@]}" -gt 0 ] && podman --runtime runc ps -a --format '{{.Names}}' | grep -q "^$RUN_ID-"; then
        echo "container.sh: containers left behind: $(podman ps -a --format '{{.Names}}' | grep "^$RUN_ID-")" >&2
        status=1
    fi
    [ -n "$work" ] && rm -rf "$work"
    if [ "$status" -ne 0 ]; then
        echo "container.sh: FAILED in phase '$phase' (exit $status)" >&2
    else
        printf -- '--- container: all phases passed in %.1f s\n' "$(($(date +%s%N) - script_started))e-9"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
work=$(mktemp -d)

# The mirror apt is configured with for $SUITE (deb822 .sources first, then one-line .list files).
debian_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uri = ""; found = 0; deb = 0; enabled = 1
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", line); split(line, a, /[ \t]+/); uri = a[1] }
                    else if (line ~ /^Suites:/) { n = split(line, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) found = 1 }
                    else if (line ~ /^Types:/) { if (line ~ /[ \t]deb([ \t]|$)/) deb = 1 }
                    else if (line ~ /^Enabled:[ \t]*(no|false)/) enabled = 0
                }
                if (found && deb && enabled && uri != "") { print uri; exit }
            }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' |
        awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }')
    [ -n "$uri" ] || fail "no deb source for $SUITE in apt's configuration: set HOTSWAP_DEBIAN_MIRROR"
    echo "$uri"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Poll URL until it answers 200 (and, when given, its body contains TEXT), while container NAME runs.
wait_for() {
    local url=$1 name=$2 text=${3:-} token=${4:-} deadline=$((SECONDS + DEADLINE_SECONDS))
    while :; do
        if python3 - "$url" "$text" "$token" <<'EOF' 2>/dev/null; then
import sys, urllib.request
url, text, token = sys.argv[1:4]
request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
with urllib.request.urlopen(request, timeout=2) as response:
    body = response.read().decode()
    sys.exit(0 if response.status == 200 and text in body else 1)
EOF
            return 0
        fi
        local state
        state=$(podman --runtime runc inspect --format '{{.State.Status}}' "$name" 2>/dev/null || echo gone)
        [ "$state" = running ] || fail "container $name is $state before $url answered"
        [ "$SECONDS" -lt "$deadline" ] || fail "$url did not answer 200 (containing: $text) within ${DEADLINE_SECONDS} s"
        sleep 0.2
    done
}

limit() { # the smaller of the hard limit $1 and $2
    if [ "$1" = unlimited ] || [ "$1" -gt "$2" ]; then echo "$2"; else echo "$1"; fi
}

# podman's default rlimits exceed this machine's hard limits: ask for what the machine allows.
nofile=$(limit "$(ulimit -Hn)" 65536)
nproc=$(limit "$(ulimit -Hu)" 32768)
ulimits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")

# --- 1. tools
begin tools "podman, runc, mmdebstrap"
missing=()
for tool in podman runc mmdebstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]} from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || fail "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || fail "apt-get install failed"
fi
pm --version
end

# --- 2. base
begin base "$BASE_IMAGE from Debian $SUITE"
certs=()
for cert in /usr/local/share/ca-certificates/*.crt /usr/local/share/ca-certificates/*/*.crt; do
    [ -f "$cert" ] && certs+=("$cert")
done
base_key=$(
    {
        echo "$BASE_RECIPE $SUITE $BASE_PACKAGES"
        [ "${#certs[@]}" -eq 0 ] || cat "${certs[@]}"
    } | sha256sum | cut -c1-16
)
have_key=""
if podman --runtime runc image exists "$BASE_IMAGE"; then
    have_key=$(podman --runtime runc image inspect --format '{{index .Labels "hotswap.base.key"}}' "$BASE_IMAGE" 2>/dev/null || true)
fi
if [ "${HOTSWAP_REBUILD_BASE:-}" != 1 ] && [ "$have_key" = "$base_key" ]; then
    say "reusing $BASE_IMAGE (key $base_key)"
else
    mirror=${HOTSWAP_DEBIAN_MIRROR:-$(debian_mirror)}
    say "mmdebstrap $SUITE from $mirror with $BASE_PACKAGES and ${#certs[@]} extra CA certificate(s)"
    hooks=()
    if [ "${#certs[@]}" -gt 0 ]; then
        hooks+=(--customize-hook="copy-in ${certs[*]} /usr/local/share/ca-certificates/")
    fi
    # shellcheck disable=SC2016 # "$1" is the chroot, expanded by mmdebstrap
    hooks+=(--customize-hook='chroot "$1" update-ca-certificates')
    # dpkg without fsync (mmdebstrap's own hook; eatmydata is gone from the result)
    [ -d /usr/share/mmdebstrap/hooks/eatmydata ] && hooks+=(--hook-dir=/usr/share/mmdebstrap/hooks/eatmydata)
    # The root file system streams into podman as a tar; mmdebstrap's chatter goes to a log shown
    # only when it fails.
    if ! mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
        "${hooks[@]}" "$SUITE" - "$mirror" 2>"$work/mmdebstrap.log" |
        pm import --quiet --change "LABEL=hotswap.base.key=$base_key" \
            --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD=["/bin/bash"]' - "$BASE_IMAGE" >/dev/null; then
        tail -n 30 "$work/mmdebstrap.log" >&2
        fail "mmdebstrap | podman import failed"
    fi
fi
end

# --- 3. build
begin build "$IMAGE from Containerfile on $BASE_IMAGE"
build_args=(--build-arg "BASE=$BASE_IMAGE")
# pip reaches PyPI through the proxy whose CA the base now trusts; another index is passed on when
# set (http(s) only: a file:// index of this host means nothing in the build; no credentials).
index=${PIP_INDEX_URL:-}
if [[ "$index" == http* ]] && [[ "$index" != *@* ]]; then
    build_args+=(--build-arg "PIP_INDEX_URL=$index")
fi
old_id=$(podman --runtime runc image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
pm build --quiet --format docker --network=host "${ulimits[@]}" "${build_args[@]}" -t "$IMAGE" -f Containerfile . >/dev/null
new_id=$(podman --runtime runc image inspect --format '{{.Id}}' "$IMAGE")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    podman --runtime runc rmi "$old_id" >/dev/null 2>&1 || true # the previous build, now untagged
fi
say "$IMAGE ${new_id:0:12}: $(podman --runtime runc image inspect --format '{{.Size}}' "$IMAGE" |
    awk '{ printf "%.0f MB", $1 / 1e6 }'), user $(podman --runtime runc image inspect --format '{{.Config.User}}' "$IMAGE")"
end

# --- 4. serve
begin serve "the image's default command on a copy of fleet-example/"
mkdir "$work/fleet"
cp -R fleet-example/. "$work/fleet/"
git -C "$work/fleet" init -q -b main
git -C "$work/fleet" add -A
git -C "$work/fleet" -c user.name=ci -c user.email=ci@localhost commit -q -m "fleet-example"
chmod -R a+rX "$work/fleet"
run_opts=(--network=host "${ulimits[@]}" -v "$work/fleet:/fleet:ro")
port=$(free_port)
control="$RUN_ID-serve"
containers+=("$control")
pm run --detach --name "$control" "${run_opts[@]}" -e HOTSWAP_REPO=/fleet -e HOTSWAP_HOST=127.0.0.1 \
    -e HOTSWAP_PORT="$port" -e HOTSWAP_INTERVAL=2 "$IMAGE" >/dev/null
wait_for "http://127.0.0.1:$port/health" "$control" '"status": "ok"'
say "/health answered 200 on 127.0.0.1:$port"
pm healthcheck run "$control"
say "HEALTHCHECK passes"
end

# --- 5. edge
begin edge "hotswap edge from the same image under that control plane"
node_token=$(pm exec "$control" hotswap token --role node --subject ci-edge-1)
viewer_token=$(pm exec "$control" hotswap token --role viewer --subject ci)
edge_token=$(pm exec "$control" hotswap token --role viewer --subject ci --audience edge) # nodes refuse API tokens
edge_port=$(free_port)
edge="$RUN_ID-edge"
containers+=("$edge")
pm run --detach --name "$edge" "${run_opts[@]}" -e HOTSWAP_NODE_TOKEN="$node_token" \
    -e HOTSWAP_HEALTH_URL="http://127.0.0.1:$edge_port/health" "$IMAGE" \
    hotswap edge --control "http://127.0.0.1:$port" --region us-east --id ci-edge-1 --port "$edge_port" >/dev/null
wait_for "http://127.0.0.1:$edge_port/health" "$edge"
pm healthcheck run "$edge"
say "HEALTHCHECK passes (HOTSWAP_HEALTH_URL names the node's port)"
wait_for "http://127.0.0.1:$port/api/v1/wasm/nodes/ci-edge-1" "$control" '"us-east"' "$viewer_token"
say "node ci-edge-1 registered"
wait_for "http://127.0.0.1:$edge_port/api/v1/wasm/modules" "$edge" 'greeter' "$edge_token"
say "node ci-edge-1 serves its assigned modules"
end

# --- 6. validate
begin validate "hotswap validate /fleet inside the image"
containers+=("$RUN_ID-validate")
pm run --rm --name "$RUN_ID-validate" "${run_opts[@]}" "$IMAGE" hotswap validate /fleet
end

# --- 7. stop: SIGTERM, and both servers must shut down cleanly (exit 0)
begin stop "SIGTERM to the edge node and the control plane"
for name in "$edge" "$control"; do
    pm stop --time 10 "$name" >/dev/null
    code=$(podman --runtime runc inspect --format '{{.State.ExitCode}}' "$name")
    [ "$code" = 0 ] || fail "$name exited with $code after SIGTERM"
done
end
