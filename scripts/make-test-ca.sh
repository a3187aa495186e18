#!/usr/bin/env bash
# Makes a throwaway CA and certificates for tests and the local cluster:
#   DIR/ca.crt, DIR/server.{crt,key} (for 127.0.0.1, ::1 and localhost, usable by servers and
#   as a client certificate between components), DIR/client.{crt,key} (a component client),
#   and DIR/rogue-ca.crt + DIR/rogue.{crt,key} signed by an unrelated CA.
set -euo pipefail
DIR="${1:?usage: make-test-ca.sh DIR}"
mkdir -p "$DIR"
cd "$DIR"
subj() { echo "/CN=$1"; }
ca() {  # name
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "$(subj "$1")" \
    -keyout "$1.key" -out "$1.crt" 2>/dev/null
}
leaf() {  # name ca
  cat > "$1.ext" <<EXT
basicConstraints=CA:FALSE
subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost
extendedKeyUsage=serverAuth,clientAuth
EXT
  openssl req -newkey rsa:2048 -nodes -subj "$(subj "$1")" -keyout "$1.key" -out "$1.csr" \
    2>/dev/null
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 3650 \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca ca
leaf server ca
leaf client ca
ca rogue-ca
leaf rogue rogue-ca
echo "$DIR"
