-- wrk script: POST distinct signed webhooks, one per request.
-- The tokens file (env TOKENS) holds one JWT per line; each wrk thread
-- takes its own slice, so no token is sent twice until a slice runs out.
local tokens = {}
local threads = {}
local counter = 0

function setup(thread)
	thread:set("id", counter)
	counter = counter + 1
	table.insert(threads, thread)
end

function init(args)
	local path = os.getenv("TOKENS")
	for line in io.lines(path) do
		tokens[#tokens + 1] = line
	end
	local nthreads = tonumber(os.getenv("WRK_THREADS") or "1")
	local per = math.floor(#tokens / nthreads)
	first = id * per + 1
	last = first + per - 1
	i = first
	wrk.method = "POST"
	wrk.headers["Content-Type"] = "text/plain"
end

function request()
	local t = tokens[i]
	i = i + 1
	if i > last then i = first end
	return wrk.format(nil, nil, nil, t)
end

non200 = 0
function response(status, headers, body)
	if status ~= 200 then non200 = non200 + 1 end
end

function done(summary, latency, requests)
	io.write(string.format("BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
		summary.requests, summary.duration, latency:percentile(50),
		latency:percentile(99), summary.errors.status + summary.errors.connect
		+ summary.errors.read + summary.errors.write + summary.errors.timeout))
end
