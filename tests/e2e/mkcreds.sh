#!/bin/sh
# Makes TLS credentials for the tests, in QEMU's layout, with GnuTLS's
# certtool: DIR/good (a CA, its server and client), DIR/rogue (another CA
# and its own), DIR/mixed-client (good CA, rogue client certificate),
# DIR/wronghost-server (good CA, a server certificate for another name),
# DIR/psk and DIR/psk-wrong (keys.psk: one identity, two keys).
set -eu
d=$1
mkdir -p "$d"
cd "$d"
ca() { # NAME
    mkdir -p "$1"
    printf 'cn = "vfiomig test CA %s"\nca\ncert_signing_key\nexpiration_days = 30\n' "$1" >"$1/ca.tmpl"
    certtool --generate-privkey --key-type ecdsa --outfile "$1/ca-key.pem" 2>/dev/null
    certtool --generate-self-signed --load-privkey "$1/ca-key.pem" --template "$1/ca.tmpl" \
        --outfile "$1/ca-cert.pem" 2>/dev/null
}
leaf() { # CADIR OUTDIR server|client DNSNAME
    mkdir -p "$2"
    if [ "$3" = server ]; then usage="tls_www_server"; else usage="tls_www_client"; fi
    printf 'cn = "%s"\ndns_name = "%s"\nip_address = "127.0.0.1"\n%s\nsigning_key\nencryption_key\nexpiration_days = 30\n' \
        "$4" "$4" "$usage" >"$2/$3.tmpl"
    certtool --generate-privkey --key-type ecdsa --outfile "$2/$3-key.pem" 2>/dev/null
    certtool --generate-certificate --load-privkey "$2/$3-key.pem" --load-ca-certificate "$1/ca-cert.pem" \
        --load-ca-privkey "$1/ca-key.pem" --template "$2/$3.tmpl" --outfile "$2/$3-cert.pem" 2>/dev/null
    [ -e "$2/ca-cert.pem" ] || cp "$1/ca-cert.pem" "$2/ca-cert.pem"
}
ca good
ca rogue
leaf good good server localhost
leaf good good client migrate-client
leaf rogue rogue server localhost
leaf rogue rogue client migrate-client
mkdir -p mixed-client wronghost-server
cp good/ca-cert.pem mixed-client/; cp rogue/client-cert.pem rogue/client-key.pem mixed-client/
leaf good wronghost-server server elsewhere.example
mkdir -p psk psk-wrong
echo "vfiomig:$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >psk/keys.psk
echo "vfiomig:$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >psk-wrong/keys.psk
chmod 600 psk/keys.psk psk-wrong/keys.psk
