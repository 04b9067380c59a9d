#!/usr/bin/env bash
# Build the CPU image (docker/Dockerfile) with docker where its daemon answers, else podman; and
# optionally smoke-test it as a non-root user on a mounted folder.
#
#   docker/build.sh                                   # base image from the registry
#   docker/build.sh --base debootstrap                # offline base: Debian packages, no registry
#   docker/build.sh --base debootstrap --wheels /opt/wheels --smoke DATA_DIR
#
# Options:
#   --engine docker|podman   force one (default: docker if `docker info` works, else podman)
#   --base registry|debootstrap
#       registry: FROM python:3.11-slim-bookworm (needs a registry);
#       debootstrap: a Debian bookworm root file system (python3, venv, passwd, CA certificates)
#       made by debootstrap from MIRROR (default http://deb.debian.org/debian; a local mirror
#       works offline), imported as the image wsi-pipeline-base:bookworm. Needs root.
#   --wheels DIR   a folder with a torch wheel (for sites that cannot reach PyTorch's index)
#   --tag TAG      image name (default wsi-pipeline:cpu)
#   --smoke DIR    afterwards, as uid 10001 with DIR mounted at /data: `--help`, then
#                  `run /data/slides -o /data/out --dry-run`, then `run ... -o /data/out`
#                  (DIR/slides must hold at least one small slide; DIR must be writable by 10001)
# Exit status 2: no container engine can run here (the reason on stderr).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ENGINE="" BASE="registry" WHEELS="" TAG="wsi-pipeline:cpu" SMOKE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --engine) ENGINE="$2"; shift 2 ;;
    --base) BASE="$2"; shift 2 ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --smoke) SMOKE="$2"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done

cannot() { echo "build.sh: cannot build here: $*" >&2; exit 2; }

if [ -z "${ENGINE}" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    ENGINE=docker
  elif command -v podman >/dev/null; then
    ENGINE=podman
  else
    cannot "no docker daemon answers and podman is not installed"
  fi
fi
command -v "${ENGINE}" >/dev/null || cannot "${ENGINE} is not installed"
# podman in a VM or container without its own limits: explicit ones (its defaults exceed what
# the user namespace allows there; harmless elsewhere), and runc where installed (crun 1.8 of
# Debian 12 failed there with "did not get container create message"). PODMAN_RUNTIME overrides.
extra=()
runtime=()
if [ "${ENGINE}" = podman ]; then
  extra+=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
  rt="${PODMAN_RUNTIME:-$(command -v runc || true)}"
  [ -n "${rt}" ] && runtime=(--runtime "${rt}")
fi

build_args=()
if [ "${BASE}" = debootstrap ]; then
  [ "$(id -u)" -eq 0 ] || cannot "--base debootstrap needs root (debootstrap, chroot)"
  command -v debootstrap >/dev/null || cannot "debootstrap is not installed (apt-get install debootstrap)"
  BASE_TAG="wsi-pipeline-base:bookworm"
  if ! "${ENGINE}" image inspect "${BASE_TAG}" >/dev/null 2>&1; then
    rootfs="$(mktemp -d /var/tmp/wsi-rootfs.XXXXXX)"
    trap 'rm -rf "${rootfs}"' EXIT
    echo "build.sh: debootstrap bookworm into ${rootfs} from ${MIRROR:-http://deb.debian.org/debian}" >&2
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
      bookworm "${rootfs}" "${MIRROR:-http://deb.debian.org/debian}" >"${rootfs}.log" 2>&1 \
      || { tail -n 20 "${rootfs}.log" >&2; exit 1; }
    # A venv whose python/pip come first on PATH: what the Dockerfile expects of its base
    # (Debian's own python3 refuses system-wide pip installs, PEP 668).
    chroot "${rootfs}" python3 -m venv /opt/python
    rm -rf "${rootfs}"/var/cache/apt/archives/*.deb "${rootfs}"/var/lib/apt/lists/*
    tar -C "${rootfs}" -c . | "${ENGINE}" import \
      --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      - "${BASE_TAG}" >/dev/null
    rm -rf "${rootfs}" "${rootfs}.log"
    trap - EXIT
  fi
  build_args+=(--build-arg "BASE_IMAGE=${BASE_TAG}")
elif [ "${BASE}" != registry ]; then
  echo "build.sh: --base must be registry or debootstrap, not ${BASE}" >&2
  exit 64
fi

copied=()
cleanup_wheels() { for f in "${copied[@]}"; do rm -f "${f}"; done; }
if [ -n "${WHEELS}" ]; then
  ls "${WHEELS}"/torch-*.whl >/dev/null 2>&1 || { echo "build.sh: no torch-*.whl in ${WHEELS}" >&2; exit 1; }
  trap cleanup_wheels EXIT
  for whl in "${WHEELS}"/*.whl; do
    cp "${whl}" "${ROOT}/docker/wheels/"
    copied+=("${ROOT}/docker/wheels/$(basename "${whl}")")
  done
fi

t0=$(date +%s)
# The host's CA bundle, for sites whose pip index sits behind a TLS-inspecting proxy: podman
# mounts it into every build step (docker build has no such flag; bake it into the base image).
if [ "${ENGINE}" = podman ] && [ -r /etc/ssl/certs/ca-certificates.crt ]; then
  extra+=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi
(cd "${ROOT}" && "${ENGINE}" "${runtime[@]}" build "${extra[@]}" "${build_args[@]}" \
  -f docker/Dockerfile -t "${TAG}" .)
echo "build.sh: ${TAG} built with ${ENGINE} (base: ${BASE}) in $(( $(date +%s) - t0 )) s" >&2

if [ -n "${SMOKE}" ]; then
  SMOKE="$(realpath "${SMOKE}")"
  ulimits=()
  [ "${ENGINE}" = podman ] && ulimits=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
  run=("${ENGINE}" "${runtime[@]}" run --rm "${ulimits[@]}" --user 10001:10001 -v "${SMOKE}:/data" "${TAG}")
  "${run[@]}" --help >/dev/null
  "${run[@]}" run /data/slides -o /data/out --dry-run
  "${run[@]}" run /data/slides -o /data/out
  echo "build.sh: smoke test passed: --help, run --dry-run, run into ${SMOKE}/out as uid 10001" >&2
fi
