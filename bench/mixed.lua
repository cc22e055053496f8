-- wrk script for the `mixed` section: nine of every ten requests are the hello page,
-- the tenth waits 20 ms (/io). A fixed cycle, so every server gets the same mix.
local n = 0

request = function()
  n = n + 1
  if n % 10 == 0 then
    return wrk.format("GET", "/io")
  end
  return wrk.format("GET", "/")
end
