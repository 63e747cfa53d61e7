#!/bin/sh
# Healthy when the IMAPS listener completes a TLS handshake and greets.
echo "a LOGOUT" | timeout 4 openssl s_client -quiet -connect 127.0.0.1:993 2>/dev/null | grep -q '^\* OK'
