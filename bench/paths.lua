-- wrk script: each request takes the next path of a list (args[1]); thread k of n (args[2]) takes
-- paths k, k+n, k+2n... so no two in-flight requests share a URL (defeats request coalescing).
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  paths = {}
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  step = tonumber(args[2])
  i = id
end
function request()
  local p = paths[(i % #paths) + 1]
  i = i + step
  return wrk.format("GET", p)
end
