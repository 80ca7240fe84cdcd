# Sourced by scripts/setup.sh and scripts/check_aarch64.sh.

# as_root CMD...: runs CMD, through sudo when not root.
as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# install_missing_packages PKG...: apt-get (non-interactive) for the Debian/Ubuntu packages of the
# list that are not installed yet; nothing when all are.
install_missing_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}
