#!/usr/bin/env bash
# Proves the Dockerfile's build stage without a Docker engine, then smoke-tests the result the
# way the runtime stage uses it.
#
#   deploy/check-dockerfile-build.sh            # CARGO_TARGET_DIR defaults to the repo's target/
#
# 1. Reads the Dockerfile: the ARG defaults, then the build stage's instructions. Only FROM,
#    WORKDIR, COPY and `RUN cargo ...` are understood there; anything else fails this check,
#    so it cannot silently drift from the file.
# 2. Checks that `rustc` here is the stage's Rust minor version (the rust:X.Y image), and warns
#    when this host is not the image's Debian release.
# 3. Copies exactly what the stage's COPY instructions copy into an empty folder and runs the
#    stage's RUN commands there (BuildKit --mount options dropped): `cargo build --release
#    --locked` from nothing but the build context the image gets.
# 4. Checks that every file the runtime stage copies exists (the binary from the build stage,
#    the health check script, the default config), then runs the binary: --version, `check`
#    on the image's default config, and a start with that config (listeners moved to free
#    loopback ports) where the HEALTHCHECK script must pass on /healthz and fail on a 404,
#    and SIGTERM must end the process with status 0 within shutdown_grace_s.
#
# Prints `binary: PATH` (for deploy/check.py) and exits non-zero on any problem.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dockerfile=$repo/Dockerfile
work=$(mktemp -d)
proxy_pid=
cleanup() {
    if [[ -n $proxy_pid ]] && kill -0 "$proxy_pid" 2>/dev/null; then kill -KILL "$proxy_pid"; fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "check-dockerfile-build: FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

target_dir=$(realpath -m "${CARGO_TARGET_DIR:-$repo/target}")
export CARGO_TARGET_DIR=$target_dir

# --- 1. the Dockerfile, one instruction per line (continuations joined, comments dropped)
[[ -f $dockerfile ]] || fail "no Dockerfile at $dockerfile"
mapfile -t instructions < <(awk '
    /^[[:space:]]*#/ && !pending { next }
    /^[[:space:]]*$/ && !pending { next }
    {
        line = $0
        if (line ~ /\\[[:space:]]*$/) { sub(/\\[[:space:]]*$/, "", line); pending = pending line " "; next }
        print pending line; pending = ""
    }' "$dockerfile")

declare -A args=()
stage=0            # 0 before the first FROM, 1 the build stage, 2 and more later stages
build_name= build_image= workdir=/
build_copies=()    # "src... dest" as written
build_runs=()
runtime_copies=()  # COPY lines of the later stages, as written
for instruction in "${instructions[@]}"; do
    read -r keyword rest <<<"$instruction"
    keyword=${keyword^^}
    if [[ $keyword == FROM ]]; then
        stage=$((stage + 1))
        if ((stage == 1)); then
            read -r build_image _as build_name <<<"$rest"
        fi
        continue
    fi
    if ((stage == 0)); then
        [[ $keyword == ARG ]] || fail "unexpected $keyword before the first FROM"
        name=${rest%%=*}
        [[ $rest == *=* ]] && args[$name]=${rest#*=}
        continue
    fi
    if ((stage == 1)); then
        case $keyword in
            WORKDIR) workdir=$rest ;;
            COPY)
                [[ $rest != --from* ]] || fail "build stage: COPY --from is not supported by this check"
                build_copies+=("$workdir|$rest")
                ;;
            RUN)
                command=$(sed -E 's/--mount=[^[:space:]]+[[:space:]]*//g' <<<"$rest")
                [[ $command == cargo\ * ]] || fail "build stage: only RUN cargo ... is reproduced here, found: RUN $rest"
                build_runs+=("$workdir|$command")
                ;;
            *) fail "build stage: $keyword is not reproduced by this check; extend deploy/check-dockerfile-build.sh" ;;
        esac
        continue
    fi
    [[ $keyword == COPY ]] && runtime_copies+=("$rest")
    if [[ $keyword == ARG && $rest == CONFIG=* ]]; then args[CONFIG]=${rest#CONFIG=}; fi
done
((stage >= 2)) || fail "the Dockerfile needs a build stage and a runtime stage (found $stage FROM)"
((${#build_runs[@]} > 0)) || fail "the build stage runs no cargo command"
printf '%s\n' "${build_runs[@]}" | grep -q 'cargo build .*--release' || fail "the build stage does not run cargo build --release"
printf '%s\n' "${build_runs[@]}" | grep -q -- '--locked' || fail "the build stage's cargo build is not --locked"

expand() { # ${NAME} from the ARG defaults
    local text=$1 name
    for name in "${!args[@]}"; do text=${text//\$\{$name\}/${args[$name]}}; done
    printf '%s' "$text"
}
build_image=$(expand "$build_image")
step "Dockerfile build stage: FROM $build_image AS $build_name, ${#build_copies[@]} COPY, ${#build_runs[@]} RUN"

# --- 2. the toolchain
rust_version=${args[RUST_VERSION]:-}
[[ -n $rust_version ]] || fail "no ARG RUST_VERSION=X.Y before the first FROM"
[[ $build_image == rust:* ]] || fail "the build stage is not FROM rust:...: $build_image"
here=$(rustc --version | awk '{print $2}')
if [[ ${here%.*} != "${rust_version%.*}" && ${here%.*} != "$rust_version" ]]; then
    fail "rustc here is $here but the image builds with rust:$rust_version; build with the same minor version (or bump ARG RUST_VERSION)"
fi
echo "rustc $here matches rust:$rust_version"
release=${args[DEBIAN_RELEASE]:-}
host_release=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true
if [[ -n $release && $host_release != "$release" ]]; then
    echo "warning: this host is Debian '${host_release:-unknown}', the image builds on '$release'; the binary here links this host's libc"
fi

# --- 3. the build stage: its copies, its commands
root=$work/root
for entry in "${build_copies[@]}"; do
    dir=${entry%%|*}
    read -r -a parts <<<"${entry#*|}"
    parts=("${parts[@]/#--*/}")                # drop --chmod= and similar flags
    read -r -a parts <<<"${parts[*]}"
    dest=${parts[-1]}
    [[ $dest == /* ]] || dest=$dir/$dest
    unset 'parts[-1]'
    for src in "${parts[@]}"; do
        [[ -e $repo/$src ]] || fail "build stage copies $src, which is not in the repository"
        if [[ -d $repo/$src ]]; then
            mkdir -p "$root$dest"
            cp -a "$repo/$src/." "$root$dest/"
        elif [[ $dest == */ || ${#parts[@]} -gt 1 ]]; then
            mkdir -p "$root$dest"
            cp -a "$repo/$src" "$root$dest/"
        else
            mkdir -p "$(dirname "$root$dest")"
            cp -a "$repo/$src" "$root$dest"
        fi
    done
done
for entry in "${build_runs[@]}"; do
    dir=${entry%%|*}
    command=${entry#*|}
    step "RUN $command   (in a copy of the build context, CARGO_TARGET_DIR=$target_dir)"
    mkdir -p "$root$dir"
    (cd "$root$dir" && bash -c "$command") || fail "the build stage's command failed: $command"
done

# --- 4. the runtime stage's copies
binary=
config=
for copy in "${runtime_copies[@]}"; do
    read -r -a parts <<<"$copy"
    from=
    words=()
    for part in "${parts[@]}"; do
        case $part in
            --from=*) from=${part#--from=} ;;
            --*) ;;
            *) words+=("$(expand "$part")") ;;
        esac
    done
    dest=${words[-1]}
    src=${words[0]}
    if [[ -n $from ]]; then
        [[ $from == "$build_name" ]] || fail "COPY --from=$from: not the build stage"
        # the build stage's target/ is CARGO_TARGET_DIR here
        mapped=$src
        for entry in "${build_runs[@]}"; do
            dir=${entry%%|*}
            [[ $src == "$dir/target/"* ]] && mapped=$target_dir/${src#"$dir/target/"}
        done
        [[ -f $mapped ]] || fail "the runtime stage copies $src from the build stage, which did not produce it ($mapped)"
        [[ $dest == */sse-edge ]] && binary=$mapped
    else
        [[ -f $repo/$src ]] || fail "the runtime stage copies $src, which is not in the repository"
        [[ $dest == *.toml ]] && config=$repo/$src
    fi
done
[[ -n $binary ]] || fail "the runtime stage copies no sse-edge binary from the build stage"
[[ -n $config ]] || fail "the runtime stage copies no configuration"
healthz=$repo/deploy/docker/healthz.sh

step "the binary"
"$binary" --version

# The image's config needs these from the environment; check.py cross-checks that every
# deployment provides them.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export UPSTREAM_URL=http://127.0.0.1:$(free_port)
export DASHBOARD_API_KEY=check-dockerfile-build
step "sse-edge check --config ${config#"$repo/"}"
"$binary" check --config "$config" || fail "the image's default config does not pass sse-edge check"

step "start with the image's config (listeners on free loopback ports), HEALTHCHECK, SIGTERM"
http_port=$(free_port)
admin_port=$(free_port)
sed -E -e "s/^(http[[:space:]]*=[[:space:]]*)\"[^\"]*\"/\1\"127.0.0.1:$http_port\"/" \
       -e "s/^(admin[[:space:]]*=[[:space:]]*)\"[^\"]*\"/\1\"127.0.0.1:$admin_port\"/" \
       -e "/^https[[:space:]]*=/d" "$config" >"$work/proxy.toml"
grace=$(sed -nE 's/^shutdown_grace_s[[:space:]]*=[[:space:]]*([0-9]+).*/\1/p' "$work/proxy.toml")
grace=${grace:-10}
"$binary" --config "$work/proxy.toml" 2>"$work/stderr" &
proxy_pid=$!
healthy=
for _ in $(seq 1 50); do
    if "$healthz" "$admin_port" /healthz >/dev/null 2>&1; then healthy=yes; break; fi
    kill -0 "$proxy_pid" 2>/dev/null || break
    sleep 0.1
done
[[ -n $healthy ]] || { cat "$work/stderr" >&2; fail "the HEALTHCHECK script never saw /healthz answer 200"; }
echo "healthz.sh $admin_port /healthz: healthy"
if "$healthz" "$admin_port" /no-such-endpoint >/dev/null 2>&1; then
    fail "the HEALTHCHECK script passed on a 404: it does not check the status"
fi
echo "healthz.sh $admin_port /no-such-endpoint: unhealthy, as it should be"
kill -TERM "$proxy_pid"
status=
for _ in $(seq 1 $(((grace + 5) * 10))); do
    if ! kill -0 "$proxy_pid" 2>/dev/null; then
        status=0
        wait "$proxy_pid" || status=$?
        break
    fi
    sleep 0.1
done
[[ -n $status ]] || fail "still running $((grace + 5)) s after SIGTERM (shutdown_grace_s = $grace)"
[[ $status == 0 ]] || { cat "$work/stderr" >&2; fail "exit status $status after SIGTERM, expected 0"; }
proxy_pid=
echo "SIGTERM: exit 0"

echo "check-dockerfile-build: ok"
echo "binary: $binary"
