# Shared by scripts/test.sh and scripts/dev.sh: make sure PostgreSQL's server binaries exist
# (installing Debian's package on a fresh machine) and put them on PATH.

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

pg_bin_dir() {
  local d
  if command -v pg_ctl >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v pg_ctl)")"; return; fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/pg_ctl" ] && { echo "$d"; return; }
  done
}

ensure_postgres() {
  if [ -z "$(pg_bin_dir)" ]; then
    echo "== installing PostgreSQL (server binaries not found)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  PG_BIN=$(pg_bin_dir)
  export PATH="$PG_BIN:$PATH"
}
