#!/usr/bin/env bash
# Installs the Moments gateway on Raspberry Pi OS 64-bit or Debian (bookworm or newer) as the
# systemd service `moments`. Safe to run again: an upgrade is a re-run with the new checkout or
# wheel and --upgrade. It never overwrites /etc/moments/moments.toml once it exists.
#
# What it does, in order:
#   1. apt packages: python3-venv, mosquitto, mosquitto-clients, bluez, dbus (only those missing)
#   2. the system user and group `moments` (no login, no home), a member of `bluetooth`
#   3. folders: /opt/moments (code, root's), /etc/moments and /etc/moments/tls (root:moments
#      0750), /var/lib/moments (the store, moments:moments 0750)
#   4. a venv at /opt/moments/.venv with the package installed from the checkout or a wheel
#   5. /etc/moments/moments.toml from --config (default deploy/moments.example.toml) if absent
#   6. certificates and keys given as options into /etc/moments/tls (keys 0640)
#   7. broker configuration, when deploy/mosquitto exists, where deploy/mosquitto/README.md
#      puts it, each file only when absent (operators add logins and ACL blocks afterwards):
#      moments.conf as /etc/mosquitto/mosquitto.conf (the package's file is kept as
#      mosquitto.conf.before-moments), moments.acl as /etc/mosquitto/moments.acl and, with
#      --hq-bridge, bridge-hq.conf into /etc/mosquitto/conf.d/ (STORE_ID replaced by store_id
#      of moments.toml in both), an empty /etc/mosquitto/moments.passwd; then Mosquitto is
#      restarted when its TLS files are in place
#   8. the unit to /etc/systemd/system/moments.service, daemon-reload, enable --now (and a
#      restart when the gateway was already running, so an upgrade takes effect)
#
# --upgrade, for a new version over an installed one: the gateway is stopped before step 4
# (the store must not be in use while the code changes under it), and after step 5 the store
# is brought to the new code's schema with `moments store migrate`, run as the service user
# with the unit's MOMENTS_DATA_DIR. The migration takes its own backup first, into
# /var/lib/moments/backups/pre-migrate-<from>-to-<to>-<time>, only when there is something to
# migrate; a second run finds nothing to do. Step 8 starts the gateway again. When the
# migration fails the script stops there with the gateway stopped; the message names the backup.
#
# --dry-run prints every action, one per line prefixed "[dry-run] ", and changes nothing; it
# needs no root. MOMENTS_INSTALL_ROOT (default empty) prefixes every path the script reads on the
# target or would write; it is for --dry-run only (tests point it at an empty folder).
set -euo pipefail

readonly PREFIX="[dry-run] "
DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly DEPLOY_DIR
readonly TARGET="${MOMENTS_INSTALL_ROOT:-}"
readonly APP_DIR="$TARGET/opt/moments"
readonly VENV="$APP_DIR/.venv"
readonly ETC_DIR="$TARGET/etc/moments"
readonly TLS_DIR="$ETC_DIR/tls"
readonly CONFIG_PATH="$ETC_DIR/moments.toml"
readonly DATA_DIR="$TARGET/var/lib/moments"
readonly UNIT_PATH="$TARGET/etc/systemd/system/moments.service"
readonly MOSQUITTO_ETC="$TARGET/etc/mosquitto"
readonly MOSQUITTO_CONF="$MOSQUITTO_ETC/mosquitto.conf"
readonly SERVICE_USER="moments"
readonly APT_PACKAGES=(python3-venv mosquitto mosquitto-clients bluez dbus)
export PATH="$PATH:/usr/sbin:/sbin"
umask 022

usage() {
  cat <<'EOF'
usage: install.sh [--dry-run] [--upgrade] [--source DIR | --wheel FILE] [--config FILE]
                  [--ca FILE] [--cert FILE] [--key FILE] [--broker-cert FILE]
                  [--broker-key FILE] [--hq-ca FILE] [--hq-bridge]

  --dry-run      print every action (prefixed "[dry-run] ") and change nothing
  --upgrade      stop the gateway, install the new package, migrate the store (a backup is
                 taken first when there is something to migrate), start the gateway
  --source DIR   checkout to install the package from (default: the one holding this script)
  --wheel FILE   install this wheel instead of a checkout
  --config FILE  configuration copied to /etc/moments/moments.toml when that file is absent
                 (default: deploy/moments.example.toml; an existing file is never replaced)
  --ca FILE      CA bundle, installed as /etc/moments/tls/ca.crt
  --cert FILE    this store's certificate, installed as /etc/moments/tls/store.crt
  --key FILE     its private key, installed as /etc/moments/tls/store.key (root:moments 0640)
  --broker-cert FILE  the store broker's certificate: /etc/moments/tls/broker.crt
  --broker-key FILE   its private key: /etc/moments/tls/broker.key (root:mosquitto 0640)
  --hq-ca FILE   HQ's CA bundle for the broker's HQ bridge: /etc/moments/tls/hq-ca.crt
  --hq-bridge    install the broker's bridge to HQ (deploy/mosquitto/bridge-hq.conf)
  -h, --help     this text

Run as root (sudo), except with --dry-run. Running it again is safe.
EOF
}

die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*" >&2; }

DRY_RUN=0
UPGRADE=0
SOURCE=""
WHEEL=""
CONFIG_SRC=""
CA_SRC=""
CERT_SRC=""
KEY_SRC=""
BROKER_CERT_SRC=""
BROKER_KEY_SRC=""
HQ_CA_SRC=""
HQ_BRIDGE=0

need_value() {  # need_value OPTION ARGUMENT_COUNT
  if [ "$2" -lt 2 ]; then
    printf 'install.sh: %s needs a value\n' "$1" >&2; usage >&2; exit 2
  fi
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --upgrade) UPGRADE=1 ;;
    --source) need_value "$1" "$#"; SOURCE="$2"; shift ;;
    --wheel) need_value "$1" "$#"; WHEEL="$2"; shift ;;
    --config) need_value "$1" "$#"; CONFIG_SRC="$2"; shift ;;
    --ca) need_value "$1" "$#"; CA_SRC="$2"; shift ;;
    --cert) need_value "$1" "$#"; CERT_SRC="$2"; shift ;;
    --key) need_value "$1" "$#"; KEY_SRC="$2"; shift ;;
    --broker-cert) need_value "$1" "$#"; BROKER_CERT_SRC="$2"; shift ;;
    --broker-key) need_value "$1" "$#"; BROKER_KEY_SRC="$2"; shift ;;
    --hq-ca) need_value "$1" "$#"; HQ_CA_SRC="$2"; shift ;;
    --hq-bridge) HQ_BRIDGE=1 ;;
    -h|--help) usage; exit 0 ;;
    *) printf 'install.sh: unknown option: %s\n' "$1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

# Every change goes through run: executed, or printed under --dry-run.
run() {
  if [ "$DRY_RUN" -eq 1 ]; then
    printf '%s%s\n' "$PREFIX" "$(printf '%q ' "$@" | sed 's/ $//')"
  else
    "$@"
  fi
}

# Copies SRC to DEST with MODE, OWNER and GROUP unless DEST already has the same content;
# returns 0 when it copied (or would), 1 when DEST was already up to date.
install_file() {  # install_file SRC DEST MODE OWNER GROUP
  if [ -f "$2" ] && cmp -s "$1" "$2"; then
    run chmod "$3" "$2"
    run chown "$4:$5" "$2"
    return 1
  fi
  run install -m "$3" -o "$4" -g "$5" "$1" "$2"
}

# Installs SRC as DEST, with STORE_ID replaced by ID, only when DEST does not exist; returns 0
# when it installed (or would), 1 when DEST was kept.
install_new() {  # install_new SRC DEST MODE OWNER GROUP ID
  if [ -e "$2" ]; then
    say "keeping the existing $2"
    return 1
  fi
  if [ "$DRY_RUN" -eq 1 ]; then
    printf '%sinstall -m %s -o %s -g %s %q %q  # STORE_ID replaced by %s\n' \
      "$PREFIX" "$3" "$4" "$5" "$1" "$2" "$6"
    return 0
  fi
  local tmp
  tmp="$(mktemp)"
  sed "s/STORE_ID/$6/g" "$1" > "$tmp"
  install -m "$3" -o "$4" -g "$5" "$tmp" "$2"
  rm -f "$tmp"
}

# --- checks before any change ---
if [ -n "$TARGET" ] && [ "$DRY_RUN" -eq 0 ]; then
  die "MOMENTS_INSTALL_ROOT is only for --dry-run"
fi
if [ "$DRY_RUN" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo $0 ...), or with --dry-run to see what it would do"
fi
if [ -n "$SOURCE" ] && [ -n "$WHEEL" ]; then
  die "give --source or --wheel, not both"
fi
if [ -n "$WHEEL" ]; then
  [ -f "$WHEEL" ] || die "no such wheel: $WHEEL"
  case "$WHEEL" in *.whl) ;; *) die "not a wheel (*.whl): $WHEEL" ;; esac
  PACKAGE="$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")"
else
  SOURCE="${SOURCE:-$DEPLOY_DIR/..}"
  [ -f "$SOURCE/pyproject.toml" ] || die "not a Moments checkout (no pyproject.toml): $SOURCE"
  PACKAGE="$(cd "$SOURCE" && pwd)"
fi
CONFIG_SRC="${CONFIG_SRC:-$DEPLOY_DIR/moments.example.toml}"
[ -f "$CONFIG_SRC" ] || die "no such configuration file: $CONFIG_SRC"
[ -f "$DEPLOY_DIR/moments.service" ] || die "no unit file: $DEPLOY_DIR/moments.service"
for given in "$CA_SRC" "$CERT_SRC" "$KEY_SRC" "$BROKER_CERT_SRC" "$BROKER_KEY_SRC" "$HQ_CA_SRC"; do
  if [ -n "$given" ] && [ ! -f "$given" ]; then die "no such file: $given"; fi
done
if [ "$DRY_RUN" -eq 1 ]; then say "dry run: nothing is changed"; fi

# --- 1. packages ---
say "system packages"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  run apt-get update -qq
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
else
  say "all of ${APT_PACKAGES[*]} are installed"
fi
if [ "$DRY_RUN" -eq 0 ]; then
  python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' ||
    die "the gateway needs Python 3.11 or newer (python3 is $(python3 -V 2>&1))"
fi

# --- 2. user ---
say "user $SERVICE_USER"
if id "$SERVICE_USER" >/dev/null 2>&1; then
  say "user $SERVICE_USER exists"
else
  run useradd --system --user-group --home-dir /var/lib/moments --no-create-home \
    --shell /usr/sbin/nologin --comment "Moments gateway" "$SERVICE_USER"
fi
# BlueZ's D-Bus policy lets the `bluetooth` group scan (the group comes with the bluez package).
if id -nG "$SERVICE_USER" 2>/dev/null | tr ' ' '\n' | grep -qx bluetooth; then
  say "user $SERVICE_USER is in group bluetooth"
elif [ "$DRY_RUN" -eq 1 ] || getent group bluetooth >/dev/null; then
  run usermod --append --groups bluetooth "$SERVICE_USER"
else
  say "warning: no group bluetooth (is bluez installed?): the radio will be unavailable"
fi

# --- 3. folders ---
say "folders"
run install -d -m 0755 -o root -g root "$APP_DIR"
run install -d -m 0750 -o root -g "$SERVICE_USER" "$ETC_DIR"
run install -d -m 0750 -o root -g "$SERVICE_USER" "$TLS_DIR"
run install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$DATA_DIR"

# --- 4. venv and package ---
if [ "$UPGRADE" -eq 1 ]; then
  say "upgrade: stopping the gateway"
  # A dry run cannot know whether it runs; it shows the stop.
  if [ "$DRY_RUN" -eq 1 ] || systemctl is-active --quiet moments.service; then
    run systemctl stop moments.service
  else
    say "the gateway is not running"
  fi
fi
say "venv and package"
if [ ! -x "$VENV/bin/python" ]; then
  run python3 -m venv "$VENV"
fi
# pip reinstalls a checkout or wheel given by path, so a re-run installs the new code.
run "$VENV/bin/pip" install --quiet --no-cache-dir --upgrade "$PACKAGE"

# --- 5. configuration ---
say "configuration"
if [ -e "$CONFIG_PATH" ]; then
  say "keeping the existing $CONFIG_PATH"
else
  run install -m 0640 -o root -g "$SERVICE_USER" "$CONFIG_SRC" "$CONFIG_PATH"
fi

# --- 5b. store migration (--upgrade) ---
if [ "$UPGRADE" -eq 1 ]; then
  say "upgrade: store migration (a backup is taken first when there is something to migrate)"
  if ! run runuser -u "$SERVICE_USER" -- env MOMENTS_DATA_DIR="$DATA_DIR" \
      "$VENV/bin/moments" store migrate -c "$CONFIG_PATH"; then
    die "the store migration failed and the gateway is left stopped: the message above names \
the backup (moments store restore --from DIR --force), see docs/OPERATIONS.md, Upgrade"
  fi
fi

# --- 6. certificates ---
say "certificates"
if [ -n "$CA_SRC" ]; then install_file "$CA_SRC" "$TLS_DIR/ca.crt" 0644 root root || true; fi
if [ -n "$CERT_SRC" ]; then
  install_file "$CERT_SRC" "$TLS_DIR/store.crt" 0644 root root || true
fi
if [ -n "$KEY_SRC" ]; then
  install_file "$KEY_SRC" "$TLS_DIR/store.key" 0640 root "$SERVICE_USER" || true
fi
if [ -n "$BROKER_CERT_SRC" ]; then
  install_file "$BROKER_CERT_SRC" "$TLS_DIR/broker.crt" 0644 root root || true
fi
if [ -n "$BROKER_KEY_SRC" ]; then
  install_file "$BROKER_KEY_SRC" "$TLS_DIR/broker.key" 0640 root mosquitto || true
fi
if [ -n "$HQ_CA_SRC" ]; then install_file "$HQ_CA_SRC" "$TLS_DIR/hq-ca.crt" 0644 root root || true; fi
if [ -z "$CA_SRC$CERT_SRC$KEY_SRC$BROKER_CERT_SRC$BROKER_KEY_SRC$HQ_CA_SRC" ]; then
  say "none given"
fi

# --- 7. broker configuration ---
# The files and their places are deploy/mosquitto/README.md's. Operators edit them afterwards
# (a device's login and ACL block, the LAN address), so an existing one is never replaced.
say "broker configuration"
if [ -d "$DEPLOY_DIR/mosquitto" ]; then
  config_for_id="$CONFIG_PATH"
  [ -f "$config_for_id" ] || config_for_id="$CONFIG_SRC"
  store_id="$(sed -n 's/^store_id *= *"\([A-Za-z0-9._-]*\)".*/\1/p' "$config_for_id" | head -n 1)"
  store_id="${store_id:-store-1}"
  broker_changed=0
  if [ -f "$DEPLOY_DIR/mosquitto/moments.conf" ]; then
    if grep -q '^# Moments store broker' "$MOSQUITTO_CONF" 2>/dev/null; then
      say "keeping the existing Moments broker configuration $MOSQUITTO_CONF"
    else
      if [ -f "$MOSQUITTO_CONF" ] && [ ! -e "$MOSQUITTO_CONF.before-moments" ]; then
        run cp -p "$MOSQUITTO_CONF" "$MOSQUITTO_CONF.before-moments"
      fi
      run install -m 0644 -o root -g root "$DEPLOY_DIR/mosquitto/moments.conf" "$MOSQUITTO_CONF"
      broker_changed=1
    fi
  fi
  if [ -f "$DEPLOY_DIR/mosquitto/moments.acl" ]; then
    if install_new "$DEPLOY_DIR/mosquitto/moments.acl" "$MOSQUITTO_ETC/moments.acl" \
        0640 root mosquitto "$store_id"; then
      broker_changed=1
    fi
  fi
  # Mosquitto refuses to start without its password file: an empty one until logins are added.
  if [ ! -e "$MOSQUITTO_ETC/moments.passwd" ]; then
    run install -m 0640 -o root -g mosquitto /dev/null "$MOSQUITTO_ETC/moments.passwd"
    broker_changed=1
  fi
  if [ "$HQ_BRIDGE" -eq 1 ]; then
    if install_new "$DEPLOY_DIR/mosquitto/bridge-hq.conf" "$MOSQUITTO_ETC/conf.d/bridge-hq.conf" \
        0644 root root "$store_id"; then
      broker_changed=1
    fi
  fi
  if [ "$broker_changed" -eq 0 ]; then
    :
  elif [ -f "$TLS_DIR/broker.crt" ] && [ -f "$TLS_DIR/broker.key" ]; then
    run systemctl restart mosquitto.service ||
      say "warning: Mosquitto did not restart: journalctl -u mosquitto"
  else
    say "warning: Mosquitto keeps its old configuration until restarted; its TLS listener needs"
    say "  $TLS_DIR/broker.crt and broker.key (--broker-cert/--broker-key), and every login a"
    say "  password (deploy/mosquitto/README.md); then: systemctl restart mosquitto"
  fi
else
  say "no deploy/mosquitto folder: the broker keeps its configuration"
fi

# --- 8. service ---
say "service"
was_active=0
if [ "$DRY_RUN" -eq 0 ] && systemctl is-active --quiet moments.service; then was_active=1; fi
install_file "$DEPLOY_DIR/moments.service" "$UNIT_PATH" 0644 root root || true
run systemctl daemon-reload
run systemctl enable --now moments.service
# An upgrade: the running gateway still has the old code.
if [ "$was_active" -eq 1 ]; then run systemctl restart moments.service; fi
if [ "$DRY_RUN" -eq 1 ]; then
  say "dry run done: nothing was changed"
else
  say "done: systemctl status moments; journalctl -u moments -f"
fi
