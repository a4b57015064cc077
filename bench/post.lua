-- bench/post.lua — wrk script: POSTs an exact number of JSON bodies, each with
-- its own X-Request-ID, and counts every answer that is not 204.
--
--   wrk -t T -c C -d LIMIT -s bench/post.lua URL -- BODIES TOTAL T TAG TOKEN
--
-- BODIES  a file with one JSON body per line, used in turn (e.g. one per group)
-- TOTAL   requests to send in all; thread i sends its share, no more:
--         delay() (called once before each request) parks a connection once
--         the thread has reserved its share, so nothing more is written; the
--         thread stops when its share is answered — the server sees exactly
--         TOTAL requests.  wrk's main thread sleeps for -d regardless, so the
--         last thread to finish wakes it with SIGINT (its "stop" signal):
--         each finished thread creates BODIES.TAG.done<tid>; the one that then
--         sees all of them sends it (tgkill to the main thread, through LuaJIT's
--         FFI).  -d stays the upper bound on the run.
-- T       the same thread count as wrk's -t (each thread needs its share)
-- TAG     X-Request-ID prefix, unique per run: TAG-<thread>-<n>
-- TOKEN   sent as "Authorization: Token TOKEN" (empty: no Authorization header)
--
-- done() prints one line "RESULT key=value ..." that bench/run.sh parses.

-- ---- setup phase (main Lua state): number the threads, keep them for done()
local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("tid", #threads)
end

-- ---- running phase (one Lua state per thread)
-- (globals, not locals: done() reads them through thread:get)
local ffi = require("ffi")
ffi.cdef [[ int getpid(void); int tgkill(int tgid, int tid, int sig); ]]
local bodies, nbodies = {}, 0
local share, tag, headers, seq, nthreads, donefile
issued, answered, bad, first_bad = 0, 0, 0, ""
seq = 0

function init(args)
    local file, total = args[1], tonumber(args[2])
    nthreads = tonumber(args[3])
    tag = args[4] or "bench"
    donefile = file .. "." .. tag .. ".done"
    local token = args[5] or ""
    for line in io.lines(file) do
        if #line > 0 then
            nbodies = nbodies + 1
            bodies[nbodies] = line
        end
    end
    assert(nbodies > 0, "no bodies in " .. file)
    share = math.floor(total / nthreads)
    if tid <= total % nthreads then share = share + 1 end
    headers = { ["Content-Type"] = "application/json" }
    if token ~= "" then headers["Authorization"] = "Token " .. token end
    assert(share > 0, "fewer requests than threads")
end

function delay()
    if issued < share then
        issued = issued + 1     -- reserved here: request() follows exactly once
        return 0
    end
    return 3600000              -- parked: this thread has issued its share
end

function request()
    seq = seq + 1
    headers["X-Request-ID"] = tag .. "-" .. tid .. "-" .. seq
    return wrk.format("POST", nil, headers, bodies[(seq - 1) % nbodies + 1])
end

local function exists(path)
    local f = io.open(path, "r")
    if f then f:close() return true end
    return false
end

local function finished()
    wrk.thread:stop()
    local f = assert(io.open(donefile .. tid, "w"))
    f:close()
    for i = 1, nthreads do
        if not exists(donefile .. i) then return end
    end
    local pid = ffi.C.getpid()
    ffi.C.tgkill(pid, pid, 2)   -- SIGINT to wrk's main thread: end the run now
end

function response(status, hdrs, body)
    answered = answered + 1
    if status ~= 204 then
        bad = bad + 1
        if first_bad == "" then
            first_bad = status .. " " .. string.sub(body or "", 1, 160)
        end
    end
    if answered == share then finished() end
end

-- ---- done phase (main Lua state)
function done(summary, latency, requests)
    local answered_all, bad_all, issued_all, fb = 0, 0, 0, ""
    for _, t in ipairs(threads) do
        answered_all = answered_all + (t:get("answered") or 0)
        bad_all = bad_all + (t:get("bad") or 0)
        issued_all = issued_all + (t:get("issued") or 0)
        if fb == "" then fb = t:get("first_bad") or "" end
    end
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d issued=%d answered=%d non204=%d duration_us=%d rps=%.1f " ..
        "p50_us=%d p90_us=%d p99_us=%d max_us=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d\n",
        summary.requests, issued_all, answered_all, bad_all, summary.duration,
        summary.requests / (summary.duration / 1e6),
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
        e.connect, e.read, e.write, e.timeout))
    if fb ~= "" then
        io.write("FIRST_BAD " .. string.gsub(fb, "[\r\n]", " ") .. "\n")
    end
end
