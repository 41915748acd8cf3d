-- wrk script (wrk's LuaJIT) for `make bench-haproxy`: every request carries
-- the next of the tokens in the file given after `--` (one per line) as
-- `Authorization: Bearer ...`, round-robin, so a cache sees each token
-- once per round.  The requests are formatted once, in init.
local requests = {}
local count, current = 0, 0

function init(args)
  for line in io.lines(args[1]) do
    count = count + 1
    requests[count] = wrk.format(nil, nil, { Authorization = "Bearer " .. line })
  end
  assert(count > 0, "no tokens in " .. tostring(args[1]))
end

function request()
  current = current % count + 1
  return requests[current]
end
