#!/usr/bin/env bash
# Installs the pinned checkers and client tools the tests use, into .tools/ (nothing
# system-wide but Debian packages a fresh machine lacks):
#   .tools/py   kubernetes-validate (Kubernetes manifests against the API schemas, offline),
#               grpcio and grpcio-tools (the Python client example; grpcio-tools carries
#               stock protoc)
#   .tools/buf  buf (protobuf lint and wire-compatibility check), from the npm registry
#   .tools/axe  axe-core (the console pages' accessibility audit), from the npm registry
#   systemd-analyze (systemd unit checks), from Debian's systemd package
#   chromium and chromedriver (the console's browser tests), certutil and pk12util (the
#   test browsers' certificate stores), openssl (PKCS#12 for them), from Debian; and a
#   Chromium policy that picks a test browser's one client certificate for 127.0.0.1 by
#   itself (as an agency's managed browsers are set up for the console)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
KUBERNETES_VALIDATE=1.37.0
GRPCIO=1.75.1
BUF=1.75.0
apt_install() {
  echo "installing Debian packages: $*" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v python3 >/dev/null || apt_install python3 python3-venv python3-pip
command -v npm >/dev/null || apt_install npm
command -v systemd-analyze >/dev/null || apt_install systemd
pkgs=()
command -v chromium >/dev/null || pkgs+=(chromium)
command -v chromedriver >/dev/null || pkgs+=(chromium-driver)
command -v certutil >/dev/null && command -v pk12util >/dev/null || pkgs+=(libnss3-tools)
command -v openssl >/dev/null || pkgs+=(openssl)
[ ${#pkgs[@]} -eq 0 ] || apt_install "${pkgs[@]}"
policy=/etc/chromium/policies/managed/henvis-console-tests.json
if [ ! -f "$policy" ]; then
  mkdir -p "$(dirname "$policy")"
  printf '%s\n' '{"AutoSelectCertificateForUrls": ["{\"pattern\":\"https://127.0.0.1:*\",\"filter\":{}}"]}' >"$policy"
fi

py="$root/.tools/py"
if [ ! -x "$py/bin/python" ]; then
  python3 -m venv "$py" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$py"; }
fi
want="grpcio==$GRPCIO grpcio-tools==$GRPCIO kubernetes-validate==$KUBERNETES_VALIDATE"
have=$("$py/bin/pip" freeze --disable-pip-version-check 2>/dev/null | tr '\n' ' ')
missing=0
for pkg in $want; do
  case " $have " in *" $pkg "*) ;; *) missing=1 ;; esac
done
if [ "$missing" = 1 ]; then
  # shellcheck disable=SC2086
  "$py/bin/pip" install --quiet --disable-pip-version-check $want
fi

buf="$root/.tools/buf/node_modules/.bin/buf"
if [ ! -x "$buf" ] || [ "$("$buf" --version)" != "$BUF" ]; then
  mkdir -p "$root/.tools/buf"
  (cd "$root/.tools/buf" && npm install --silent --no-audit --no-fund --prefix . "@bufbuild/buf@$BUF" >/dev/null)
fi
got=$("$buf" --version)
[ "$got" = "$BUF" ] || { echo "expected buf $BUF, got $got" >&2; exit 1; }

# axe-core: the console's automated accessibility audit (WCAG 2.1 A/AA rules) in the
# browser tests
AXE=4.14.1
axe="$root/.tools/axe/node_modules/axe-core"
if [ ! -f "$axe/axe.min.js" ] || ! grep -q "\"version\": \"$AXE\"" "$axe/package.json"; then
  mkdir -p "$root/.tools/axe"
  (cd "$root/.tools/axe" && npm install --silent --no-audit --no-fund --prefix . "axe-core@$AXE" >/dev/null)
fi
grep -q "\"version\": \"$AXE\"" "$axe/package.json" || { echo "expected axe-core $AXE" >&2; exit 1; }
