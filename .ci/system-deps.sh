#!/usr/bin/env bash
# Install the Debian packages the integration tests need (run as root; idempotent, quiet).
#   dovecot-core/-imapd/-lmtpd  real IMAP + LMTP peer for tests/fixtures/servers.py (`dovecot` fixture)
#   neomutt                     real mail client for client-level tests
#   swaks                       scripted SMTP transactions
# The system dovecot service must not run: the tests start private instances on free ports.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "system-deps.sh: must run as root" >&2
    exit 1
fi

missing=()
command -v dovecot >/dev/null 2>&1 || missing+=(dovecot-core dovecot-imapd dovecot-lmtpd)
[[ -e /usr/lib/dovecot/imap ]] || missing+=(dovecot-imapd)
[[ -e /usr/lib/dovecot/lmtp ]] || missing+=(dovecot-lmtpd)
command -v neomutt >/dev/null 2>&1 || command -v mutt >/dev/null 2>&1 || missing+=(neomutt)
command -v swaks >/dev/null 2>&1 || missing+=(swaks)

if ((${#missing[@]})); then
    # Keep package scripts from starting services (Docker images usually ship this already).
    created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    log=$(mktemp)
    # shellcheck disable=SC2046
    if ! { apt-get update -qq &&
           apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u); } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
    if ((created_policy)); then
        rm -f /usr/sbin/policy-rc.d
    fi
fi

# Make sure no system-wide dovecot holds ports 143/24 etc. (tests use their own instances).
if [[ -s /run/dovecot/master.pid ]] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
    doveadm stop >/dev/null 2>&1 || kill "$(cat /run/dovecot/master.pid)" 2>/dev/null || true
fi
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
fi

dovecot --version >/dev/null
