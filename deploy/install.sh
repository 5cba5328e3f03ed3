#!/usr/bin/env bash
# Installs the Moments gateway on Raspberry Pi OS 64-bit or Debian (bookworm or newer) as the
# systemd service `moments`. Safe to run again: a re-run over an installed gateway upgrades it
# (see below). It never overwrites /etc/moments/moments.toml once it exists.
#
# What it does, in order:
#   1. apt packages: python3-venv, mosquitto, mosquitto-clients, bluez, dbus (only those missing)
#   2. the system user and group `moments` (no login, no home), a member of `bluetooth`
#   3. folders: /opt/moments (code, root's), /etc/moments and /etc/moments/tls (root:moments
#      0750: the gateway's, closed to everyone else, Mosquitto included; an existing one keeps
#      its mode while a Mosquitto file this script does not rewrite still reads it, see step 7),
#      /var/lib/moments (the store) and /var/backups/moments (for `moments store backup`), both
#      moments:moments 0750
#   4. a venv at /opt/moments/.venv with the package installed from the checkout or a wheel, and
#      the command /usr/local/bin/moments (a link into the venv) unless that name is taken
#   5. /etc/moments/moments.toml (root:moments 0640) from --config (default
#      deploy/moments.example.toml) if absent, with data_dir = "/var/lib/moments" (the unit's
#      MOMENTS_DATA_DIR, so commands run by hand with -c that file open the same store) and,
#      when the source has no broker password, [broker] username "gateway" (when empty) and a
#      new random password, which is never printed. An existing file is kept; a warning says
#      when it lacks that data_dir or a broker login.
#   6. certificates and keys given as options: the gateway's into /etc/moments/tls (ca.crt,
#      store.crt, hq-ca.crt; store.key root:moments 0640), and Mosquitto's own copies into
#      /etc/mosquitto/certs (certificates root:root 0644, keys root:mosquitto 0640), which the
#      `mosquitto` user reads: ca.crt, broker.crt and broker.key (the LAN's TLS listener) and,
#      for the HQ bridge only (--hq-bridge, or bridge-hq.conf installed), hq-ca.crt, store.crt
#      and store.key. A copy whose option is not given is taken from the file already in
#      /etc/moments/tls, so a re-run keeps the copies in step with the gateway's files.
#   7. broker configuration, when deploy/mosquitto exists, where deploy/mosquitto/README.md
#      puts it, each file only when absent (operators add logins and ACL blocks afterwards):
#      moments.conf as /etc/mosquitto/mosquitto.conf (the package's file is kept as
#      mosquitto.conf.before-moments), moments.acl as /etc/mosquitto/moments.acl, with
#      --hq-bridge bridge-hq.conf into /etc/mosquitto/conf.d/ (STORE_ID replaced by store_id of
#      moments.toml in both, except in explanatory comments: lines starting "# "), and
#      tls-listener.conf as /etc/mosquitto/conf.d/00-moments-tls.conf only once
#      /etc/mosquitto/certs holds broker.crt and broker.key (without them Mosquitto would not
#      start: it then listens on 127.0.0.1:1883 only; "00-" puts the listener before the
#      bridge's connection block, as Mosquitto reads conf.d alphabetically; a conf.d/
#      moments-tls.conf of an older install is renamed so); /etc/mosquitto/moments.passwd
#      (root:mosquitto 0640) gets the gateway's login from moments.toml, hashed, when step 5
#      wrote moments.toml or the file has no line for that username (other logins in it are
#      kept), else it is created empty when absent. A kept Moments file (its first line
#      "# Moments store broker...") that still points Mosquitto at /etc/moments/tls/, as an
#      older install's did, is pointed at /etc/mosquitto/certs/ (the original kept beside it as
#      FILE.before-moments-<UTC time>). When any of Mosquitto's files (steps 6 and 7) was
#      installed or changed, Mosquitto is restarted, unless it could not start with them: a
#      file of someone else's still reading /etc/moments (changed by hand only), or a copy in
#      /etc/mosquitto/certs missing that a rewritten file needs; the script then says what to
#      change and leaves Mosquitto running on its old files.
#   8. journald's limits for an SD card: deploy/journald/moments.conf as
#      /etc/systemd/journald.conf.d/moments.conf when absent, then systemd-journald restarted
#   9. the unit to /etc/systemd/system/moments.service, daemon-reload, enable --now (and a
#      restart when the gateway was still running)
#
# Without systemd running (a chroot or an image build: no /run/systemd/system, or
# systemd-detect-virt --chroot says so) nothing is stopped, reloaded, started or restarted:
# step 9 only enables the unit (`systemctl enable` works offline) and the gateway, Mosquitto
# and journald take the new files at the next boot.
#
# Upgrade: with --upgrade, and by itself whenever a gateway is already installed (the unit or
# /opt/moments/.venv/bin/moments exists), the gateway is stopped before step 4 (the store must
# not be in use while the code changes under it): `systemctl stop` whenever the unit exists,
# whatever its state (one in a restart loop would otherwise come back during the upgrade).
# From then until step 9 starts it, a failing exit says that the gateway is left stopped and
# how to get it back (see gateway_left_stopped). The store's lock
# (/var/lib/moments/store/moments.lock) is checked with flock(1): when a process still holds
# it (a gateway started outside the unit), the script stops there, before any code changes.
# After step 5 the store is brought to the new code's schema with `moments store migrate`, run
# as the service user with the unit's MOMENTS_DATA_DIR. The migration takes its own backup
# first, into /var/lib/moments/backups/pre-migrate-<from>-to-<to>-<time>, only when there is
# something to migrate; a second run finds nothing to do. Step 9 starts the gateway again. When
# the migration fails the script stops there with the gateway stopped; the migration's own
# message says whether a backup was taken and names it.
#
# --dry-run prints every action, one per line prefixed "[dry-run] ", and changes nothing; it
# needs no root. MOMENTS_INSTALL_ROOT (default empty) prefixes every path the script reads on the
# target or would write; it is for --dry-run only (tests point it at an empty folder).
# MOMENTS_INSTALL_SYSTEMD=running|offline, for --dry-run only too (tests), says whether to
# act as with systemd running or not, instead of looking at $MOMENTS_INSTALL_ROOT/run/systemd.
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
# The store's folder as the gateway sees it (the unit's MOMENTS_DATA_DIR), written into the
# configuration; DATA_DIR above is where this script finds it.
readonly STORE_DATA_DIR="/var/lib/moments"
readonly BACKUP_DIR="$TARGET/var/backups/moments"
readonly COMMAND_LINK="$TARGET/usr/local/bin/moments"
readonly JOURNALD_DIR="$TARGET/etc/systemd/journald.conf.d"
readonly UNIT_PATH="$TARGET/etc/systemd/system/moments.service"
readonly MOSQUITTO_ETC="$TARGET/etc/mosquitto"
readonly MOSQUITTO_CONF="$MOSQUITTO_ETC/mosquitto.conf"
readonly MOSQUITTO_PASSWD="$MOSQUITTO_ETC/moments.passwd"
# Mosquitto's own copies of its TLS files: it reads them as the `mosquitto` user, to whom
# /etc/moments is closed.
readonly MOSQUITTO_CERTS="$MOSQUITTO_ETC/certs"
# The LAN's TLS listener. Mosquitto reads conf.d in alphabetical order, and mosquitto.conf(5)
# wants general settings and listeners before any bridge's `connection` block: "00-" puts it
# before bridge-hq.conf. An older install named it moments-tls.conf, which came after.
readonly MOSQUITTO_TLS_CONF="$MOSQUITTO_ETC/conf.d/00-moments-tls.conf"
readonly OLD_MOSQUITTO_TLS_CONF="$MOSQUITTO_ETC/conf.d/moments-tls.conf"
readonly BRIDGE_CONF="$MOSQUITTO_ETC/conf.d/bridge-hq.conf"
# The store's lock, which a running gateway holds (gateway/store/backup.py, hold_lock).
readonly STORE_LOCK="$DATA_DIR/store/moments.lock"
# The gateway's login on the store broker (its `user` block in deploy/mosquitto/moments.acl).
readonly BROKER_USER="gateway"
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
                 taken first when there is something to migrate), start the gateway; a
                 re-run over an installed gateway does this without the option
  --source DIR   checkout to install the package from (default: the one holding this script)
  --wheel FILE   install this wheel instead of a checkout
  --config FILE  configuration copied to /etc/moments/moments.toml when that file is absent
                 (default: deploy/moments.example.toml; an existing file is never replaced),
                 with data_dir = "/var/lib/moments" and, when it has no broker password, the
                 broker login "gateway" with a new password (also put in Mosquitto's file)
  --ca FILE      the store CA: /etc/moments/tls/ca.crt, and /etc/mosquitto/certs/ca.crt
  --cert FILE    this store's HQ client certificate: /etc/moments/tls/store.crt (and, for
                 the HQ bridge, /etc/mosquitto/certs/store.crt)
  --key FILE     its private key: /etc/moments/tls/store.key (root:moments 0640; for the
                 HQ bridge, /etc/mosquitto/certs/store.key, root:mosquitto 0640)
  --broker-cert FILE  the store broker's certificate: /etc/mosquitto/certs/broker.crt
  --broker-key FILE   its private key: /etc/mosquitto/certs/broker.key (root:mosquitto 0640);
                 with both in place, the LAN's TLS listener (8883) is installed
  --hq-ca FILE   HQ's CA bundle: /etc/moments/tls/hq-ca.crt (and, for the HQ bridge,
                 /etc/mosquitto/certs/hq-ca.crt)
  --hq-bridge    install the broker's bridge to HQ (deploy/mosquitto/bridge-hq.conf)
  -h, --help     this text

Run as root (sudo), except with --dry-run. Running it again is safe. Without systemd running
(a chroot, an image build) it enables the gateway, which starts at the next boot.
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
# when it installed (or would), 1 when DEST was kept. Explanatory comments (a line whose "#" is
# followed by a blank, or nothing) keep STORE_ID, the placeholder they explain; a commented-out
# setting ("#remote_username STORE_ID") gets the id, ready to be uncommented.
install_new() {  # install_new SRC DEST MODE OWNER GROUP ID
  if [ -e "$2" ]; then
    say "keeping the existing $2"
    return 1
  fi
  if [ "$DRY_RUN" -eq 1 ]; then
    printf '%sinstall -m %s -o %s -g %s %q %q  # STORE_ID replaced by %s, not in comments\n' \
      "$PREFIX" "$3" "$4" "$5" "$1" "$2" "$6"
    return 0
  fi
  local tmp
  tmp="$(mktemp)"
  sed -E '/^[[:space:]]*#([[:space:]]|$)/!s/STORE_ID/'"$6"'/g' "$1" > "$tmp"
  install -m "$3" -o "$4" -g "$5" "$tmp" "$2"
  rm -f "$tmp"
}

# Writes to DEST the configuration SRC with the top-level data_dir set to STORE_DATA_DIR and,
# when SRC's [broker] password is empty, [broker] username (BROKER_USER when empty) and a new
# random password. Comments and every other line are kept. The result is parsed again and
# checked. Prints "login" when it set a login, "kept" otherwise; never the password.
render_config() {  # render_config SRC DEST
  python3 - "$1" "$2" "$STORE_DATA_DIR" "$BROKER_USER" <<'PY'
import json, os, re, secrets, sys, tomllib

src, dest, data_dir, default_user = sys.argv[1:5]
with open(src, encoding="utf-8") as fh:
    text = fh.read()
try:
    broker = tomllib.loads(text).get("broker", {})
except tomllib.TOMLDecodeError as exc:
    sys.exit(f"install.sh: {src} is not valid TOML: {exc}")
login = {}
if isinstance(broker, dict) and not broker.get("password"):
    login = {"username": broker.get("username") or default_user,
             "password": secrets.token_urlsafe(24)}
header = re.compile(r"^\s*\[")
table = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+)\s*\]")
assignment = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")
out, done, section = [], set(), None


def wanted(sec):
    return {None: {"data_dir": data_dir}, "broker": login}.get(sec, {})


def finish(sec):
    for key, value in wanted(sec).items():
        if (sec, key) not in done:
            out.append(f"{key} = {json.dumps(value)}\n")
            done.add((sec, key))


for line in text.splitlines(keepends=True):
    if header.match(line):
        finish(section)
        match = table.match(line)
        section = match.group(1) if match else ""
    else:
        match = assignment.match(line)
        if match and match.group(1) in wanted(section):
            key = match.group(1)
            out.append(f"{key} = {json.dumps(wanted(section)[key])}\n")
            done.add((section, key))
            continue
    if not line.endswith("\n"):
        line += "\n"
    out.append(line)
finish(section)
if login and ("broker", "password") not in done:
    out.append("\n[broker]\n")
    finish("broker")
result = "".join(out)
try:
    parsed = tomllib.loads(result)
except tomllib.TOMLDecodeError as exc:
    sys.exit(f"install.sh: cannot set data_dir and the broker login in {src} ({exc})")
if parsed.get("data_dir") != data_dir or any(
    parsed.get("broker", {}).get(key) != value for key, value in login.items()
):
    sys.exit(f"install.sh: cannot set data_dir and the broker login in {src}")
fd = os.open(dest, os.O_WRONLY | os.O_TRUNC)
with os.fdopen(fd, "w", encoding="utf-8") as fh:
    fh.write(result)
print("login" if login else "kept")
PY
}

# Writes "USER:PASSWORD" of FILE's [broker] login into DEST (mode 0600) and prints USER; fails
# when FILE has no username or no password.
broker_login_of() {  # broker_login_of FILE DEST
  python3 - "$1" "$2" <<'PY'
import sys, tomllib

with open(sys.argv[1], "rb") as fh:
    broker = tomllib.load(fh).get("broker", {})
user, password = broker.get("username", ""), broker.get("password", "")
if not user or not password or ":" in user or "\n" in user + password:
    sys.exit(1)
with open(sys.argv[2], "w", encoding="utf-8") as fh:
    fh.write(f"{user}:{password}\n")
print(user)
PY
}

# Prints the username of FILE's [broker] table (a simple "..." string), or nothing.
broker_username() {  # broker_username FILE
  awk '/^[[:space:]]*\[/ { broker = ($0 ~ /^[[:space:]]*\[[[:space:]]*broker[[:space:]]*\]/) }
       broker && /^[[:space:]]*username[[:space:]]*=[[:space:]]*"[^"]+"/ {
         sub(/^[^"]*"/, ""); sub(/".*$/, ""); print; exit
       }' "$1"
}

# Whether Mosquitto's password file has a line for USER.
has_passwd_line() {  # has_passwd_line USER
  [ -f "$MOSQUITTO_PASSWD" ] &&
    awk -F: -v user="$1" '$1 == user { found = 1 } END { exit !found }' "$MOSQUITTO_PASSWD"
}

# Whether systemd runs this system (it booted with systemd, and this is no chroot): only then
# can services be stopped, reloaded, started or restarted. MOMENTS_INSTALL_SYSTEMD overrides it
# for dry runs (tests); with MOMENTS_INSTALL_ROOT, the target's /run/systemd is looked at.
systemd_running() {
  case "${MOMENTS_INSTALL_SYSTEMD:-}" in
    running) return 0 ;;
    offline) return 1 ;;
  esac
  [ -d "$TARGET/run/systemd/system" ] || return 1
  if [ -z "$TARGET" ] && command -v systemd-detect-virt >/dev/null 2>&1 &&
      systemd-detect-virt --quiet --chroot; then
    return 1
  fi
  return 0
}

# Mosquitto's copies in MOSQUITTO_CERTS that are there, or that this run installs (a dry run
# installs nothing), one name a word.
MOSQUITTO_PLACED=" "
# Installs SRC (when given, else the gateway's file of the same role, when there is one) as
# MOSQUITTO_CERTS/NAME with MODE, root and GROUP; a new or changed copy sets broker_changed.
broker_copy() {  # broker_copy SRC FALLBACK NAME MODE GROUP
  local src="$1"
  if [ -z "$src" ] && [ -f "$2" ]; then src="$2"; fi
  if [ -z "$src" ]; then
    return 0
  fi
  if [ ! -d "$MOSQUITTO_CERTS" ] && [ "$certs_dir_made" -eq 0 ]; then
    run install -d -m 0755 -o root -g root "$MOSQUITTO_CERTS"
    certs_dir_made=1
  fi
  if install_file "$src" "$MOSQUITTO_CERTS/$3" "$4" root "$5"; then broker_changed=1; fi
  MOSQUITTO_PLACED="$MOSQUITTO_PLACED$3 "
}

# Whether MOSQUITTO_CERTS/NAME is there or this run installs it.
broker_has() {  # broker_has NAME
  [ -f "$MOSQUITTO_CERTS/$1" ] || case "$MOSQUITTO_PLACED" in *" $1 "*) true ;; *) false ;; esac
}

# Prints the lines of FILE... (those that exist) that open a listener on port 8883.
listeners_8883() {  # listeners_8883 FILE...
  local file
  for file in "$@"; do
    if [ -f "$file" ]; then
      grep -HEn '^[[:space:]]*listener[[:space:]]+8883([[:space:]]|$)' "$file" || true
    fi
  done
}

# A setting of a Mosquitto file that names a file or folder under /etc/moments (closed to the
# mosquitto user), and one that names a file right in /etc/moments/tls, whose copy of the same
# name is in /etc/mosquitto/certs.
readonly ETC_MOMENTS_SETTING='^[[:space:]]*[a-z_]*(file|path)[[:space:]]+/etc/moments/'
TLS_FILE_SETTING='^[[:space:]]*[a-z_]*file[[:space:]]+/etc/moments/tls/'
readonly TLS_FILE_SETTING="$TLS_FILE_SETTING"'[^/[:space:]]+[[:space:]]*$'

# Whether FILE is one of the Moments broker files (deploy/mosquitto), by its header.
moments_authored() {  # moments_authored FILE
  grep -q '^# Moments store broker' "$1"
}

# What step 7 does about FILE pointing Mosquitto at /etc/moments: "none" (it does not, or it is
# a mosquitto.conf step 7 replaces), "rewrite" (a Moments file whose every such setting names
# a file in /etc/moments/tls: pointed at /etc/mosquitto/certs) or "foreign" (only its owner
# can change it; Mosquitto would not start with it, so it is not restarted).
mosquitto_fate() {  # mosquitto_fate FILE
  if [ ! -f "$1" ] || ! grep -Eq "$ETC_MOMENTS_SETTING" "$1"; then
    echo none
  elif [ "$1" = "$MOSQUITTO_CONF" ] && [ -f "$DEPLOY_DIR/mosquitto/moments.conf" ] &&
      ! moments_authored "$1"; then
    echo none
  elif [ -d "$DEPLOY_DIR/mosquitto" ] && moments_authored "$1" &&
      ! grep -E "$ETC_MOMENTS_SETTING" "$1" | grep -Evq "$TLS_FILE_SETTING"; then
    echo rewrite
  else
    echo foreign
  fi
}

# The files (mosquitto.conf, conf.d/*.conf) that still point Mosquitto at /etc/moments and
# that this script leaves as they are, one a line.
foreign_mosquitto_files() {
  local file
  for file in "$MOSQUITTO_CONF" "$MOSQUITTO_ETC"/conf.d/*.conf; do
    if [ "$(mosquitto_fate "$file")" = foreign ]; then printf '%s\n' "$file"; fi
  done
}

# Prints the names of the files in /etc/moments/tls that FILE's settings name, one a line.
tls_file_names() {  # tls_file_names FILE
  grep -E "$TLS_FILE_SETTING" "$1" |
    sed -E 's#^.*/etc/moments/tls/([^/[:space:]]+)[[:space:]]*$#\1#' | sort -u
}

# Where an upgrade stands while the gateway is stopped (step 4 to step 9), for
# gateway_left_stopped: "stopped" (nothing changed yet), "pip" (the code being replaced),
# "migrate" (the new code installed, the store not yet migrated) or "installed" (both done);
# empty when the gateway was not stopped by this run, or once it is started again.
GATEWAY_DOWN=""

# Says, on a failing exit with the gateway stopped by this run, that it is left stopped, why,
# and how to get it back. The EXIT trap of an upgrade (gateway_down_trap) calls it.
gateway_left_stopped() {  # gateway_left_stopped EXIT_STATUS
  local lead="the gateway is left STOPPED"
  if [ "$DRY_RUN" -eq 1 ]; then lead="a real run failing here would leave the gateway STOPPED"; fi
  printf 'install.sh: %s: the upgrade failed (exit status %s, the reason is above).\n' \
    "$lead" "$1" >&2
  case "$GATEWAY_DOWN" in
    stopped)
      printf '%s\n' "install.sh: nothing of its code or store was changed yet: start the previous \
version again with: systemctl start moments" >&2 ;;
    pip)
      printf '%s\n' "install.sh: installing the new code failed part-way (no network, a bad \
wheel?): the old code may be partly replaced, so systemctl start moments may not start the \
previous version. Fix the cause and run install.sh again (the same options): it installs the \
package again, migrates the store and starts the gateway." >&2 ;;
    migrate)
      printf '%s\n' "install.sh: the new code is installed, the store is not migrated (the new \
gateway refuses it). Fix the cause and run install.sh again; to go back instead, see \
docs/OPERATIONS.md, Upgrade." >&2 ;;
    *)
      printf '%s\n' "install.sh: the new code is installed and the store migrated: start it \
with: systemctl start moments (or fix the cause and run install.sh again)." >&2 ;;
  esac
}

# The EXIT trap armed once the gateway is stopped: only a failing exit says anything.
gateway_down_trap() {
  local status=$?
  if [ "$status" -ne 0 ] && [ -n "$GATEWAY_DOWN" ]; then gateway_left_stopped "$status"; fi
}

# Stops the gateway's service for an upgrade when its unit is installed and systemd runs, and
# arms the EXIT trap that tells, on a failing exit, that the gateway is left stopped. Stopped
# whatever its state: `systemctl is-active` fails for a unit in a restart loop (activating,
# auto-restart), which systemd would start again in the middle of pip and the migration;
# stopping a stopped unit does nothing. The state is only for the message.
stop_gateway() {
  if [ "$SYSTEMD_RUNNING" -eq 0 ]; then
    say "systemd is not running: no gateway service to stop"
    return 0
  fi
  if [ ! -e "$UNIT_PATH" ]; then
    say "no unit $UNIT_PATH: no gateway service to stop"
    return 0
  fi
  if [ "$DRY_RUN" -eq 0 ]; then
    say "the gateway is $(systemctl is-active moments.service 2>/dev/null || true): stopping it"
  fi
  GATEWAY_DOWN=stopped
  trap gateway_down_trap EXIT
  run systemctl stop moments.service
}

# Fails, before any code changes, when a process holds the store's lock: a gateway started
# outside the unit (by hand, another supervisor), which the unit's stop did not end. Neither
# pip nor the migration may run under it. flock(1) is util-linux's, on every Debian system.
check_store_free() {
  if [ ! -f "$STORE_LOCK" ]; then
    return 0
  fi
  if ! command -v flock >/dev/null 2>&1; then
    say "warning: no flock(1): cannot check that the store is not in use"
    return 0
  fi
  local rc=0 holder
  flock --nonblock --conflict-exit-code 75 "$STORE_LOCK" true || rc=$?
  if [ "$rc" -eq 75 ]; then
    holder="$(tr -cd '0-9' < "$STORE_LOCK" 2>/dev/null | head -c 12 || true)"
    # With the service stopped, the EXIT trap says so and how to start it again.
    die "the store $DATA_DIR/store is in use: a process${holder:+ ($holder)} holds its lock \
$STORE_LOCK, a gateway started outside the moments service or a moments store command. Stop \
it and run install.sh again. Nothing was installed: code and store are as they were."
  elif [ "$rc" -ne 0 ]; then
    say "warning: could not check the store's lock $STORE_LOCK (flock exited $rc)"
  fi
}

# --- checks before any change ---
if [ -n "$TARGET" ] && [ "$DRY_RUN" -eq 0 ]; then
  die "MOMENTS_INSTALL_ROOT is only for --dry-run"
fi
case "${MOMENTS_INSTALL_SYSTEMD:-}" in
  "") ;;
  running|offline)
    [ "$DRY_RUN" -eq 1 ] || die "MOMENTS_INSTALL_SYSTEMD is only for --dry-run" ;;
  *) die "MOMENTS_INSTALL_SYSTEMD must be running or offline, not: $MOMENTS_INSTALL_SYSTEMD" ;;
esac
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
[ -f "$DEPLOY_DIR/journald/moments.conf" ] ||
  die "no journald drop-in: $DEPLOY_DIR/journald/moments.conf"
for given in "$CA_SRC" "$CERT_SRC" "$KEY_SRC" "$BROKER_CERT_SRC" "$BROKER_KEY_SRC" "$HQ_CA_SRC"; do
  if [ -n "$given" ] && [ ! -f "$given" ]; then die "no such file: $given"; fi
done
if [ "$DRY_RUN" -eq 1 ]; then say "dry run: nothing is changed"; fi
if systemd_running; then
  SYSTEMD_RUNNING=1
else
  SYSTEMD_RUNNING=0
  say "systemd is not running (a chroot or an image build): services are enabled, not started,"
  say "  and take the new files at the next boot"
fi
readonly SYSTEMD_RUNNING
# A re-run over an installed gateway is an upgrade: the new code must not run on a store at the
# old schema (the gateway refuses it and the unit fails), so stop, install, migrate, start.
if [ "$UPGRADE" -eq 0 ] && { [ -e "$UNIT_PATH" ] || [ -e "$VENV/bin/moments" ]; }; then
  say "the gateway is already installed: upgrading it as --upgrade does (stop the gateway,"
  say "  install the package, migrate the store with a backup first if needed, start it)"
  UPGRADE=1
fi

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
# The gateway's folders are closed to Mosquitto. An operator may have opened them for an older
# install's Mosquitto files that read /etc/moments/tls; step 7 points Moments files at
# Mosquitto's copies, but a file of someone else's still reading them keeps them as they are.
foreign_files="$(foreign_mosquitto_files)"
for dir in "$ETC_DIR" "$TLS_DIR"; do
  if [ -d "$dir" ] && [ -n "$foreign_files" ]; then
    say "keeping the mode and owner of $dir: Mosquitto still reads it through" \
      "${foreign_files//$'\n'/, } (see the broker configuration below)"
  else
    run install -d -m 0750 -o root -g "$SERVICE_USER" "$dir"
  fi
done
run install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$DATA_DIR"
# Where operators put `moments store backup` copies, run as the service user (docs/OPERATIONS.md).
run install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$BACKUP_DIR"

# --- 4. venv and package ---
if [ "$UPGRADE" -eq 1 ]; then
  say "upgrade: stopping the gateway"
  stop_gateway
  check_store_free
fi
say "venv and package"
if [ ! -x "$VENV/bin/python" ]; then
  run python3 -m venv "$VENV"
fi
# pip reinstalls a checkout or wheel given by path, so a re-run installs the new code.
if [ -n "$GATEWAY_DOWN" ]; then GATEWAY_DOWN=pip; fi
run "$VENV/bin/pip" install --quiet --no-cache-dir --upgrade "$PACKAGE"
if [ -n "$GATEWAY_DOWN" ]; then GATEWAY_DOWN=migrate; fi
# `moments` on root's and sudo's PATH, for the commands docs/OPERATIONS.md shows.
if [ -L "$COMMAND_LINK" ] && [ "$(readlink "$COMMAND_LINK")" = "/opt/moments/.venv/bin/moments" ]
then
  say "$COMMAND_LINK is the gateway's command"
elif [ -e "$COMMAND_LINK" ] || [ -L "$COMMAND_LINK" ]; then
  say "warning: keeping $COMMAND_LINK, which is not the gateway's: run /opt/moments/.venv/bin/moments"
else
  run ln -s /opt/moments/.venv/bin/moments "$COMMAND_LINK"
fi

# --- 5. configuration ---
say "configuration"
config_new=0
if [ -e "$CONFIG_PATH" ]; then
  say "keeping the existing $CONFIG_PATH"
  # The unit's MOMENTS_DATA_DIR beats the file's data_dir for the service only: a command run by
  # hand with -c this file (doctor, store, token) opens the file's data_dir.
  if ! grep -Eq "^[[:space:]]*data_dir[[:space:]]*=[[:space:]]*[\"']$STORE_DATA_DIR/?[\"']" \
      "$CONFIG_PATH"; then
    say "warning: $CONFIG_PATH does not say data_dir = \"$STORE_DATA_DIR\": the service uses"
    say "  $STORE_DATA_DIR (its MOMENTS_DATA_DIR), but moments doctor, store and token commands"
    say "  run with -c $CONFIG_PATH use the file's data_dir; add the line above its first [table]"
  fi
  if [ -z "$(broker_username "$CONFIG_PATH")" ]; then
    say "warning: $CONFIG_PATH has no [broker] username: the shipped Mosquitto configuration"
    say "  refuses anonymous logins; set username = \"$BROKER_USER\" and its password (the one"
    say "  in $MOSQUITTO_PASSWD, see deploy/mosquitto/README.md)"
  fi
elif [ "$DRY_RUN" -eq 1 ]; then
  printf '%sinstall -m 0640 -o root -g %s %q %q  # with data_dir = "%s"; [broker] username "%s" and a new password unless it has one\n' \
    "$PREFIX" "$SERVICE_USER" "$CONFIG_SRC" "$CONFIG_PATH" "$STORE_DATA_DIR" "$BROKER_USER"
  config_new=1
else
  rendered="$(mktemp)"
  if ! login="$(render_config "$CONFIG_SRC" "$rendered")"; then
    rm -f "$rendered"
    die "could not write $CONFIG_PATH from $CONFIG_SRC (see the line above)"
  fi
  install -m 0640 -o root -g "$SERVICE_USER" "$rendered" "$CONFIG_PATH"
  rm -f "$rendered"
  if [ "$login" = "login" ]; then
    say "$CONFIG_PATH: data_dir = \"$STORE_DATA_DIR\" and a broker login with a new password"
  else
    say "$CONFIG_PATH: data_dir = \"$STORE_DATA_DIR\"; its broker login kept"
  fi
  config_new=1
fi

# --- 5b. store migration (an upgrade) ---
if [ "$UPGRADE" -eq 1 ]; then
  say "upgrade: store migration (a backup is taken first when there is something to migrate)"
  if ! run runuser -u "$SERVICE_USER" -- env MOMENTS_DATA_DIR="$DATA_DIR" \
      "$VENV/bin/moments" store migrate -c "$CONFIG_PATH"; then
    die "the store migration failed and the gateway is left stopped. The line above says why \
and whether a backup was taken: a migration that failed part-way names its backup (to go back, \
reinstall the previous version, then moments store restore --from DIR --force); one refused \
before its backup (the store in use, a newer schema) left the store as it was. The new code \
is installed. See docs/OPERATIONS.md, Upgrade"
  fi
fi
if [ -n "$GATEWAY_DOWN" ]; then GATEWAY_DOWN=installed; fi

# --- 6. certificates ---
say "certificates"
# Whether any of Mosquitto's files (here and in step 7) was installed or changed: then it is
# restarted to read them.
broker_changed=0
certs_dir_made=0
# The gateway's, in /etc/moments/tls.
if [ -n "$CA_SRC" ]; then install_file "$CA_SRC" "$TLS_DIR/ca.crt" 0644 root root || true; fi
if [ -n "$CERT_SRC" ]; then
  install_file "$CERT_SRC" "$TLS_DIR/store.crt" 0644 root root || true
fi
if [ -n "$KEY_SRC" ]; then
  install_file "$KEY_SRC" "$TLS_DIR/store.key" 0640 root "$SERVICE_USER" || true
fi
if [ -n "$HQ_CA_SRC" ]; then install_file "$HQ_CA_SRC" "$TLS_DIR/hq-ca.crt" 0644 root root || true; fi
# Mosquitto's own copies, in /etc/mosquitto/certs (it cannot read /etc/moments). The broker's
# certificate and key are Mosquitto's alone; an older install kept them in /etc/moments/tls.
broker_copy "$CA_SRC" "$TLS_DIR/ca.crt" ca.crt 0644 root
broker_copy "$BROKER_CERT_SRC" "$TLS_DIR/broker.crt" broker.crt 0644 root
broker_copy "$BROKER_KEY_SRC" "$TLS_DIR/broker.key" broker.key 0640 mosquitto
# The HQ bridge's: the store's HQ client certificate and key, and HQ's CA, only for a bridge.
if [ "$HQ_BRIDGE" -eq 1 ] || [ -e "$BRIDGE_CONF" ]; then
  broker_copy "$HQ_CA_SRC" "$TLS_DIR/hq-ca.crt" hq-ca.crt 0644 root
  broker_copy "$CERT_SRC" "$TLS_DIR/store.crt" store.crt 0644 root
  broker_copy "$KEY_SRC" "$TLS_DIR/store.key" store.key 0640 mosquitto
  missing_copies=""
  for name in hq-ca.crt store.crt store.key; do
    if ! broker_has "$name"; then missing_copies="$missing_copies $name"; fi
  done
  if [ -n "$missing_copies" ]; then
    say "warning: the HQ bridge needs in $MOSQUITTO_CERTS:$missing_copies (--hq-ca, --cert, --key)"
  fi
fi
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
  conf_new=0
  if [ -f "$DEPLOY_DIR/mosquitto/moments.conf" ]; then
    if grep -q '^# Moments store broker' "$MOSQUITTO_CONF" 2>/dev/null; then
      say "keeping the existing Moments broker configuration $MOSQUITTO_CONF"
    else
      if [ -f "$MOSQUITTO_CONF" ] && [ ! -e "$MOSQUITTO_CONF.before-moments" ]; then
        run cp -p "$MOSQUITTO_CONF" "$MOSQUITTO_CONF.before-moments"
      fi
      run install -m 0644 -o root -g root "$DEPLOY_DIR/mosquitto/moments.conf" "$MOSQUITTO_CONF"
      conf_new=1
      broker_changed=1
    fi
  fi
  if [ -f "$DEPLOY_DIR/mosquitto/moments.acl" ]; then
    if install_new "$DEPLOY_DIR/mosquitto/moments.acl" "$MOSQUITTO_ETC/moments.acl" \
        0640 root mosquitto "$store_id"; then
      broker_changed=1
    fi
  fi
  # The gateway's login, from moments.toml: when step 5 wrote it (a new password replaces the
  # user's old line), or when the password file has no line for its username. Every other
  # login is kept. Mosquitto refuses to start without its password file: otherwise an empty
  # one until logins are added.
  config_user=""
  if [ -f "$CONFIG_PATH" ]; then config_user="$(broker_username "$CONFIG_PATH")"; fi
  need_login=0
  if [ "$config_new" -eq 1 ]; then
    need_login=1
  elif [ -n "$config_user" ] && ! has_passwd_line "$config_user"; then
    need_login=1
  fi
  if [ "$need_login" -eq 1 ] && [ "$DRY_RUN" -eq 1 ]; then
    printf '%sinstall -m 0640 -o root -g mosquitto <the broker login of the configuration, hashed with mosquitto_passwd -U, other logins kept> %q\n' \
      "$PREFIX" "$MOSQUITTO_PASSWD"
    broker_changed=1
  elif [ "$need_login" -eq 1 ]; then
    login_file="$(mktemp)"
    merged="$(mktemp)"
    if login_user="$(broker_login_of "$CONFIG_PATH" "$login_file")"; then
      if ! mosquitto_passwd -U "$login_file"; then
        rm -f "$login_file" "$merged"
        die "mosquitto_passwd could not hash the broker login of $CONFIG_PATH"
      fi
      if [ -f "$MOSQUITTO_PASSWD" ]; then
        awk -F: -v user="$login_user" '$1 != user' "$MOSQUITTO_PASSWD" > "$merged"
      fi
      cat "$login_file" >> "$merged"
      install -m 0640 -o root -g mosquitto "$merged" "$MOSQUITTO_PASSWD"
      say "broker login $login_user in $MOSQUITTO_PASSWD (its password is in $CONFIG_PATH only)"
      broker_changed=1
    elif [ ! -e "$MOSQUITTO_PASSWD" ]; then
      install -m 0640 -o root -g mosquitto /dev/null "$MOSQUITTO_PASSWD"
      broker_changed=1
    fi
    rm -f "$login_file" "$merged"
  elif [ ! -e "$MOSQUITTO_PASSWD" ]; then
    run install -m 0640 -o root -g mosquitto /dev/null "$MOSQUITTO_PASSWD"
    say "warning: $MOSQUITTO_PASSWD is empty: add the gateway's login with the password of"
    say "  $CONFIG_PATH (deploy/mosquitto/README.md, Add a device)"
    broker_changed=1
  fi
  conf_d_made=0
  if [ "$HQ_BRIDGE" -eq 1 ]; then
    if [ ! -d "$MOSQUITTO_ETC/conf.d" ]; then
      run install -d -m 0755 -o root -g root "$MOSQUITTO_ETC/conf.d"
      conf_d_made=1
    fi
    if install_new "$DEPLOY_DIR/mosquitto/bridge-hq.conf" "$BRIDGE_CONF" \
        0644 root root "$store_id"; then
      broker_changed=1
    fi
  fi
  # Why Mosquitto must not be restarted: it would not start with its files as they are.
  broker_held=""
  # The TLS listener under its older name, which Mosquitto read after bridge-hq.conf.
  tls_conf_there=0
  if [ -e "$MOSQUITTO_TLS_CONF" ]; then tls_conf_there=1; fi
  if [ -e "$OLD_MOSQUITTO_TLS_CONF" ]; then
    if [ "$tls_conf_there" -eq 0 ]; then
      run mv "$OLD_MOSQUITTO_TLS_CONF" "$MOSQUITTO_TLS_CONF"
      say "the TLS listener is now $MOSQUITTO_TLS_CONF, read before the bridge's settings"
      tls_conf_there=1
      broker_changed=1
    elif cmp -s "$OLD_MOSQUITTO_TLS_CONF" "$MOSQUITTO_TLS_CONF"; then
      run rm -f "$OLD_MOSQUITTO_TLS_CONF"
      broker_changed=1
    else
      broker_held="$broker_held
$OLD_MOSQUITTO_TLS_CONF (the TLS listener's older name) and $MOSQUITTO_TLS_CONF are both \
there and differ: keep one (as $MOSQUITTO_TLS_CONF), remove the other"
    fi
  fi
  # The LAN's TLS listener, in a file of its own: only once its certificate and key are there,
  # since Mosquitto does not start at all when a listener's files are missing.
  if [ -f "$DEPLOY_DIR/mosquitto/tls-listener.conf" ]; then
    # An older Moments mosquitto.conf (or an operator's file) may open 8883 itself.
    elsewhere=""
    if [ "$conf_new" -eq 0 ]; then elsewhere="$(listeners_8883 "$MOSQUITTO_CONF")"; fi
    for file in "$MOSQUITTO_ETC"/conf.d/*.conf; do
      if [ "$file" != "$MOSQUITTO_TLS_CONF" ] && [ "$file" != "$OLD_MOSQUITTO_TLS_CONF" ]; then
        elsewhere="$elsewhere$(listeners_8883 "$file")"
      fi
    done
    if [ "$tls_conf_there" -eq 1 ]; then
      say "keeping the existing $MOSQUITTO_TLS_CONF"
    elif ! broker_has broker.crt || ! broker_has broker.key; then
      say "no TLS listener for the LAN yet: it needs the broker's certificate and key"
      say "  (--broker-cert, --broker-key); until then the broker listens on 127.0.0.1:1883 only"
    elif [ -n "$elsewhere" ]; then
      say "warning: not adding $MOSQUITTO_TLS_CONF: port 8883 is opened already: $elsewhere"
    else
      if [ ! -d "$MOSQUITTO_ETC/conf.d" ] && [ "$conf_d_made" -eq 0 ]; then
        run install -d -m 0755 -o root -g root "$MOSQUITTO_ETC/conf.d"
      fi
      run install -m 0644 -o root -g root "$DEPLOY_DIR/mosquitto/tls-listener.conf" \
        "$MOSQUITTO_TLS_CONF"
      broker_changed=1
    fi
  fi
  # Files of an older install, which pointed Mosquitto at the gateway's closed folder: with
  # them Mosquitto does not start (the mosquitto user cannot read /etc/moments). A Moments file
  # is pointed at Mosquitto's copies of the same names (step 6), the original kept beside it
  # (a name not ending in .conf, which include_dir skips); anyone else's is left to its owner.
  stamp="$(date -u +%Y%m%dT%H%M%SZ)"
  for file in "$MOSQUITTO_CONF" "$MOSQUITTO_ETC"/conf.d/*.conf; do
    if [ "$file" = "$MOSQUITTO_CONF" ] && [ "$conf_new" -eq 1 ]; then continue; fi
    case "$(mosquitto_fate "$file")" in
      rewrite)
        names="$(tls_file_names "$file")"
        run cp -p "$file" "$file.before-moments-$stamp"
        run sed -i -E \
          's#^([[:space:]]*[a-z_]*file[[:space:]]+)/etc/moments/tls/#\1/etc/mosquitto/certs/#' \
          "$file"
        say "$file: pointed at Mosquitto's copies in $MOSQUITTO_CERTS instead of /etc/moments/tls"
        say "  (${names//$'\n'/, }; the original kept as $file.before-moments-$stamp)"
        broker_changed=1
        for name in $names; do
          if ! broker_has "$name"; then
            broker_held="$broker_held
$file needs $MOSQUITTO_CERTS/$name, which is not there: give it to install.sh (--ca, \
--broker-cert, --broker-key, --hq-ca, --cert, --key) and run it again"
          fi
        done
        ;;
      foreign)
        broker_held="$broker_held
$file (not a Moments file, so left as it is) points Mosquitto at /etc/moments, which the \
mosquitto user cannot read. Point these lines at its copies in $MOSQUITTO_CERTS \
(deploy/mosquitto/README.md, TLS files):
$(grep -En "$ETC_MOMENTS_SETTING" "$file" | sed 's/^/    /')"
        ;;
    esac
  done
else
  say "no deploy/mosquitto folder: the broker keeps its configuration"
fi
if [ -n "${broker_held:-}" ]; then
  # Loud: the broker is the gateway's and every device's.
  say "WARNING: Mosquitto is NOT restarted: it would not start with its files as they are."
  printf '%s\n' "$broker_held" | sed '/^$/d; s/^/==>   /' >&2
  if [ "$SYSTEMD_RUNNING" -eq 1 ]; then
    say "  It keeps running on the files it read at its last start. Change the above, then:"
    say "  systemctl restart mosquitto; journalctl -u mosquitto"
  else
    say "  Change the above before the next boot, or Mosquitto will not start then."
  fi
elif [ "$broker_changed" -eq 0 ]; then
  say "Mosquitto's files are unchanged"
elif [ "$SYSTEMD_RUNNING" -eq 0 ]; then
  say "Mosquitto reads its new files when it starts (at the next boot)"
else
  run systemctl restart mosquitto.service ||
    say "warning: Mosquitto did not restart: journalctl -u mosquitto"
fi

# --- 8. journald ---
# Limits for the journal on an SD card. An existing drop-in is the operator's: never replaced.
say "journald"
if [ -e "$JOURNALD_DIR/moments.conf" ]; then
  say "keeping the existing $JOURNALD_DIR/moments.conf"
else
  run install -d -m 0755 -o root -g root "$JOURNALD_DIR"
  run install -m 0644 -o root -g root "$DEPLOY_DIR/journald/moments.conf" "$JOURNALD_DIR/moments.conf"
  if [ "$SYSTEMD_RUNNING" -eq 1 ]; then
    run systemctl restart systemd-journald.service ||
      say "warning: systemd-journald did not restart: the limits apply from its next start"
  else
    say "journald's limits apply from the next boot"
  fi
fi

# --- 9. service ---
say "service"
if [ "$SYSTEMD_RUNNING" -eq 0 ]; then
  install_file "$DEPLOY_DIR/moments.service" "$UNIT_PATH" 0644 root root || true
  # No daemon-reload and no start without a running systemd; enable works offline.
  run systemctl enable moments.service
  if [ "$DRY_RUN" -eq 1 ]; then
    say "dry run done: nothing was changed"
  else
    say "done: the gateway is enabled and starts at the next boot (systemd is not running here)"
  fi
  exit 0
fi
was_active=0
if [ "$DRY_RUN" -eq 0 ] && systemctl is-active --quiet moments.service; then was_active=1; fi
install_file "$DEPLOY_DIR/moments.service" "$UNIT_PATH" 0644 root root || true
run systemctl daemon-reload
run systemctl enable --now moments.service
# Started again: nothing left to say about a stopped gateway.
GATEWAY_DOWN=""
trap - EXIT
# An upgrade: the running gateway still has the old code.
if [ "$was_active" -eq 1 ]; then run systemctl restart moments.service; fi
if [ "$DRY_RUN" -eq 1 ]; then
  say "dry run done: nothing was changed"
else
  say "done: systemctl status moments; journalctl -u moments -f"
fi
