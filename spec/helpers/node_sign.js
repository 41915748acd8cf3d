#!/usr/bin/env node
// A second JOSE implementation for the interop spec, on Node's own crypto
// module (no JOSE library involved), so that tokenpolicy is checked against
// code that shares nothing with cjose.
//
//   node node_sign.js sign   ALG KEYFILE PAYLOAD_JSON [KID]
//       prints the compact JWS of PAYLOAD_JSON (used byte for byte) with the
//       header {"alg":ALG,"typ":"JWT"[,"kid":KID]}
//   node node_sign.js verify ALG KEYFILE TOKEN
//       checks TOKEN's signature; prints its payload and exits 0, or prints
//       why not and exits 1
//   node node_sign.js jwks KTY COUNT DISTINCT FIRST
//       prints COUNT public JWKs (KTY "RSA" 2048 bits or "EC" P-256),
//       comma-separated, with kids "k<FIRST>", "k<FIRST+1>", ...; only
//       DISTINCT keys are generated and reused in turn, since one process
//       generating thousands of keys stalls
//   node node_sign.js okp CRV DIR
//       generates an Ed25519 or Ed448 (CRV) key pair and writes it into DIR
//       as private.pem, public.pem (PKCS#8, SPKI), private.jwk, public.jwk
//
// KEYFILE is a PEM key (private to sign, public or private to verify) for
// RS/PS/ES/EdDSA, and the raw secret bytes for HS.
'use strict';

const crypto = require('crypto');
const fs = require('fs');

// JWA (RFC 7518 section 3.1): the family and hash of each algorithm.
// EdDSA (RFC 8037): the curve comes with the key, and there is no separate
// hash (Node's sign/verify take null for it).
function describe(alg) {
  if (alg === 'EdDSA') return { family: 'Ed', hash: null };
  const m = /^(HS|RS|PS|ES)(256|384|512)$/.exec(alg);
  if (!m) throw new Error('unsupported alg ' + alg);
  const bits = Number(m[2]);
  return { family: m[1], hash: 'sha' + bits, hashBytes: bits / 8 };
}

// Options for crypto.sign / crypto.verify: RSA-PSS with MGF1 and a salt as
// long as the hash (RFC 7518 section 3.5), ECDSA as R || S (section 3.4).
function keyOptions(key, d) {
  if (d.family === 'PS') {
    return { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: d.hashBytes };
  }
  if (d.family === 'ES') return { key, dsaEncoding: 'ieee-p1363' };
  return { key };
}

function b64url(buf) {
  return Buffer.from(buf).toString('base64url');
}

function sign(alg, keyFile, payload, kid) {
  const d = describe(alg);
  const header = { alg, typ: 'JWT' };
  if (kid) header.kid = kid;
  const input = b64url(JSON.stringify(header)) + '.' + b64url(Buffer.from(payload, 'utf8'));
  const keyBytes = fs.readFileSync(keyFile);
  let sig;
  if (d.family === 'HS') {
    sig = crypto.createHmac(d.hash, keyBytes).update(input).digest();
  } else {
    sig = crypto.sign(d.hash, Buffer.from(input), keyOptions(crypto.createPrivateKey(keyBytes), d));
  }
  return input + '.' + b64url(sig);
}

function verify(alg, keyFile, token) {
  const d = describe(alg);
  const parts = token.split('.');
  if (parts.length !== 3) return [false, 'not three parts'];
  const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
  if (header.alg !== alg) return [false, 'header alg is ' + header.alg];
  const input = Buffer.from(parts[0] + '.' + parts[1]);
  const sig = Buffer.from(parts[2], 'base64url');
  const keyBytes = fs.readFileSync(keyFile);
  let ok;
  if (d.family === 'HS') {
    const mac = crypto.createHmac(d.hash, keyBytes).update(input).digest();
    ok = mac.length === sig.length && crypto.timingSafeEqual(mac, sig);
  } else {
    ok = crypto.verify(d.hash, input, keyOptions(crypto.createPublicKey(keyBytes), d), sig);
  }
  if (!ok) return [false, 'signature does not verify'];
  return [true, Buffer.from(parts[1], 'base64url').toString('utf8')];
}

function jwks(kty, count, distinct, first) {
  const made = [];
  for (let i = 0; i < distinct; i++) {
    const { publicKey } = kty === 'RSA'
      ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
      : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    made.push(publicKey.export({ format: 'jwk' }));
  }
  const out = [];
  for (let i = 0; i < count; i++) {
    out.push(JSON.stringify(Object.assign({ kid: 'k' + (first + i), use: 'sig' }, made[i % distinct])));
  }
  return out.join(',');
}

function okp(crv, dir) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync(crv.toLowerCase());
  fs.writeFileSync(dir + '/private.pem', privateKey.export({ format: 'pem', type: 'pkcs8' }));
  fs.writeFileSync(dir + '/public.pem', publicKey.export({ format: 'pem', type: 'spki' }));
  fs.writeFileSync(dir + '/private.jwk', JSON.stringify(privateKey.export({ format: 'jwk' })));
  fs.writeFileSync(dir + '/public.jwk', JSON.stringify(publicKey.export({ format: 'jwk' })));
}

const [mode, alg, keyFile, data, kid] = process.argv.slice(2);
if (mode === 'okp') {
  okp(alg, keyFile);
} else if (mode === 'jwks') {
  process.stdout.write(jwks(alg, Number(keyFile), Number(data), Number(kid)));
} else if (mode === 'sign') {
  process.stdout.write(sign(alg, keyFile, data, kid));
} else if (mode === 'verify') {
  const [ok, text] = verify(alg, keyFile, data);
  process.stdout.write(text);
  process.exitCode = ok ? 0 : 1;
} else {
  process.stderr.write('usage: node_sign.js sign|verify ALG KEYFILE DATA [KID] | jwks KTY COUNT DISTINCT FIRST | okp CRV DIR\n');
  process.exitCode = 2;
}
