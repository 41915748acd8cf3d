--- Key material for specs, made at test time with the openssl CLI (no
-- committed secrets), cached per process.
local crypto = {}

local cache = {}

local function run(cmd)
  local pipe = assert(io.popen(cmd .. " 2>/dev/null", "r"))
  local out = pipe:read("a")
  local ok, _, code = pipe:close()
  assert(ok and out ~= "", "command failed (" .. tostring(code) .. "): " .. cmd)
  return out
end
crypto.run = run

local function tmpfile(content)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(content)
  f:close()
  return path
end
crypto.tmpfile = tmpfile

local function cached(key, make)
  if not cache[key] then cache[key] = make() end
  return cache[key]
end

--- A PKCS#8 PEM RSA private key of the given size (default 2048).
function crypto.rsa_private(bits)
  bits = bits or 2048
  return cached("rsa" .. bits, function()
    return run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:" .. bits)
  end)
end

--- A PKCS#8 PEM EC private key on curve P-256, P-384 or P-521.
function crypto.ec_private(curve)
  curve = curve or "P-256"
  return cached("ec" .. curve, function()
    return run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:" .. curve)
  end)
end

-- The output of an openssl command run on a private PEM (given as "%s"
-- for the file holding it), cached.
local function derived(what, command, private_pem)
  return cached(what .. private_pem, function()
    local path = tmpfile(private_pem)
    local out = run(command:format(path))
    os.remove(path)
    return out
  end)
end

--- The SPKI PEM public key of a private PEM.
function crypto.public_of(private_pem)
  return derived("pub", "openssl pkey -pubout -in %s", private_pem)
end

--- A self-signed X.509 certificate PEM for a private PEM.
function crypto.certificate_of(private_pem)
  return derived("cert", "openssl req -x509 -new -key %s -subj /CN=tokenpolicy-test -days 1", private_pem)
end

--- The PKCS#1 ("RSA PRIVATE KEY") form of an RSA private PEM.
function crypto.pkcs1_of(private_pem)
  return derived("pkcs1", "openssl pkey -traditional -in %s", private_pem)
end

--- Random bytes from the openssl CLI.
function crypto.random_bytes(n)
  local path = os.tmpname()
  run("openssl rand -out " .. path .. " " .. n .. " && echo ok")
  local f = assert(io.open(path, "rb"))
  local bytes = f:read("a")
  f:close()
  os.remove(path)
  return bytes
end

--- An oct JWK (JSON text) for an HMAC secret.
function crypto.hmac_jwk(secret, kid)
  local tp = require "tokenpolicy"
  return tp.json_encode({ kty = "oct", k = tp.b64url_encode(secret), kid = kid })
end

--- The public JWK (a Lua table) of an RSA private PEM, from its modulus.
function crypto.rsa_public_jwk(private_pem, kid)
  local tp = require "tokenpolicy"
  local path = tmpfile(private_pem)
  local text = run("openssl rsa -noout -modulus -in " .. path)
  os.remove(path)
  local n = text:match("Modulus=(%x+)"):gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
  return { kty = "RSA", n = tp.b64url_encode(n), e = "AQAB", kid = kid }
end

--- Signs data with the openssl CLI: returns the raw signature bytes.
-- `digest` is sha256/sha384/sha512; `pss` selects RSA-PSS with salt = hash length.
function crypto.openssl_sign(private_pem, data, digest, pss)
  local key = tmpfile(private_pem)
  local input = tmpfile(data)
  local out = os.tmpname()
  local opts = pss and " -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest" or ""
  run(("openssl dgst -%s -sign %s%s -out %s %s && echo ok"):format(digest, key, opts, out, input))
  local f = assert(io.open(out, "rb"))
  local sig = f:read("a")
  f:close()
  os.remove(key); os.remove(input); os.remove(out)
  return sig
end

--- Converts a DER ECDSA signature to the JWS form R || S, each padded to
-- `width` bytes, with the openssl CLI's asn1parse.
function crypto.der_to_jose(der, width)
  local path = tmpfile(der)
  local text = run("openssl asn1parse -inform DER -in " .. path)
  os.remove(path)
  local ints = {}
  for hex in text:gmatch("INTEGER%s*:(%x+)") do ints[#ints + 1] = hex end
  assert(#ints == 2, "expected two INTEGERs in an ECDSA signature")
  local out = {}
  for _, hex in ipairs(ints) do
    hex = hex:gsub("^00", "")
    hex = ("0"):rep(width * 2 - #hex) .. hex
    out[#out + 1] = (hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
  end
  return out[1] .. out[2]
end

return crypto
