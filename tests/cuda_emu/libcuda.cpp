// A fake CUDA driver on the CPU: the part of the driver API that the CUDA device
// (runtime/src/cuda.rs, through cudarc) calls, with the kernels run by the emulator (emu.h) from
// the libraries the fake NVRTC (libnvrtc.cpp) builds. It tests the host side of the CUDA device
// where there is no GPU: the order of its copies, launches and waits, its graphs, its pinned
// staging and its use of freed memory. It is not a GPU: the kernels' speed, memory model and
// floating point are the emulator's.
//
// Work queued on a stream runs only when the host waits for it (a stream or event
// synchronisation, or a copy into pageable memory, which CUDA makes synchronous), so a host that
// forgets a wait reads stale results here where a fast GPU might hide it. Copies keep CUDA's
// rules: from pageable memory the bytes are taken when the copy is queued, from pinned memory
// when it runs. Freed memory (device or pinned) is filled with NaN bytes and kept aside a
// while, and a kernel given a pointer outside every live allocation stops the device with
// CUDA_ERROR_ILLEGAL_ADDRESS, as a real fault would. Stream capture records launches and
// memsets; anything else queued while capturing (copies, allocations, frees, events, waits)
// ends the capture with CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, since in a graph it would run
// again at every replay.
//
// The device reports compute capability 9.0, 256 threads for each of LOSSC_FAKE_CUDA_SMS
// multiprocessors (default 1) and LOSSC_FAKE_CUDA_GIB GiB of memory (default 4). Everything
// runs under one lock.
//
// With LOSSC_FAKE_CUDA_DRY=1 launches are checked but do not run, and memory starts zeroed (so
// that the numbers stay finite): what is left of a training step is the host's work, which
// `lossc bench-train --device cuda` then times; at exit the driver prints the most device
// memory allocated at once.
#include <dlfcn.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fake_launch.h"

namespace {
using CUresult = int;
// The driver's errors this driver returns: CUDA_ERROR_<name> = value.
#define ERRORS(X)                       \
    X(INVALID_VALUE, 1)                 \
    X(OUT_OF_MEMORY, 2)                 \
    X(INVALID_DEVICE, 101)              \
    X(INVALID_IMAGE, 200)               \
    X(INVALID_HANDLE, 400)              \
    X(ILLEGAL_STATE, 401)               \
    X(NOT_FOUND, 500)                   \
    X(ILLEGAL_ADDRESS, 700)             \
    X(NOT_SUPPORTED, 801)               \
    X(STREAM_CAPTURE_UNSUPPORTED, 900)  \
    X(STREAM_CAPTURE_INVALIDATED, 901)
#define ENUM(name, value) name = value,
enum : CUresult { OK = 0, ERRORS(ENUM) };
#undef ENUM

// The device's memory: LOSSC_FAKE_CUDA_GIB (default 4).
const size_t TOTAL = [] {
    const char* e = std::getenv("LOSSC_FAKE_CUDA_GIB");
    return size_t(e ? std::max(1, std::atoi(e)) : 4) << 30;
}();
// Freed memory kept aside before it is given back to the host's allocator.
constexpr size_t QUARANTINE = size_t(256) << 20;

// A queued operation; its result becomes the device's error.
using Op = std::function<CUresult()>;

struct Graph {
    std::vector<Op> ops;
};

struct Stream {
    std::deque<Op> queue;
    // Operations queued and run so far.
    uint64_t issued = 0, done = 0;
    Graph* capture = nullptr;
    bool invalidated = false;
};

struct Event {
    Stream* stream = nullptr;
    uint64_t at = 0;
};

struct Module {
    void* lib;
};

struct Function {
    fake::Bind bind;
    std::string name;
};

std::mutex big;
// Live allocations by start: device memory and pinned host memory.
std::map<uintptr_t, size_t> device, pinned;
std::deque<std::pair<void*, size_t>> quarantine;
size_t quarantined = 0, used = 0, peak = 0;
// The first error of a queued operation: every call returns it from then on.
CUresult sticky = OK;
std::vector<Stream*> streams;
Stream legacy;
int the_context, the_pool;
thread_local void* current = nullptr;
thread_local std::vector<void*> pushed;

void say(const char* what) { std::fprintf(stderr, "fake libcuda: %s\n", what); }

// Whether [p, p + n) lies in one live allocation of `m` (n = 0: p is in one or at its end).
bool inside(const std::map<uintptr_t, size_t>& m, uintptr_t p, size_t n) {
    auto it = m.upper_bound(p);
    if (it == m.begin()) return false;
    --it;
    return p + n <= it->first + it->second;
}

// Whether [p, p + n) is live device memory; if not, says so for the operation `what`.
bool allocated(uintptr_t p, size_t n, const char* what) {
    if (inside(device, p, n)) return true;
    std::fprintf(stderr, "fake libcuda: %s: %zu bytes at %p are not live device memory\n", what, n, (void*)p);
    return false;
}

const bool dry = [] {
    const char* e = std::getenv("LOSSC_FAKE_CUDA_DRY");
    return e && std::strcmp(e, "1") == 0;
}();

// At exit: the peak, for sizing populations to a real GPU's memory.
struct Report {
    ~Report() {
        if (dry) {
            std::fprintf(stderr, "fake libcuda: at most %.1f MiB of device memory allocated at once\n",
                         peak / 1048576.0);
        }
    }
} report;

// The dry mode's large allocations, mapped: fresh pages read as zero and cost nothing until
// written, where zeroing them (17 GiB for a population of 128) would cost a minute of page
// faults before the first step. Unmapped when freed: a later read faults, where freed memory
// of the other mode reads NaN (the dry mode serves rehearsals and host timings, not checks).
std::map<uintptr_t, size_t> mapped;
constexpr size_t MAP_FROM = 1 << 20;

void* take(size_t bytes, size_t align) {
#ifndef __SANITIZE_ADDRESS__
    if (dry && bytes >= MAP_FROM) {
        size_t n = (bytes + 4095) / 4096 * 4096;
        void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return nullptr;
        mapped[reinterpret_cast<uintptr_t>(p)] = n;
        return p;
    }
#endif
#ifdef __SANITIZE_ADDRESS__
    // The size asked for, so that AddressSanitizer sees a kernel read past its buffer.
    size_t n = bytes;
    void* p = nullptr;
    if (posix_memalign(&p, align, n ? n : align) != 0) p = nullptr;
#else
    size_t n = (bytes + align - 1) / align * align;
    void* p = std::aligned_alloc(align, n ? n : align);
#endif
    // Not zero, as on a GPU: a kernel that reads memory nobody wrote sees NaN.
    if (p) std::memset(p, dry ? 0 : 0xff, n ? n : align);
    return p;
}

void retire(void* p, size_t n) {
    auto m = mapped.find(reinterpret_cast<uintptr_t>(p));
    if (m != mapped.end()) {
        munmap(p, m->second);
        mapped.erase(m);
        return;
    }
    std::memset(p, 0xff, n);
    quarantine.emplace_back(p, n);
    quarantined += n;
    while (quarantined > QUARANTINE) {
        std::free(quarantine.front().first);
        quarantined -= quarantine.front().second;
        quarantine.pop_front();
    }
}

Stream* of(void* h) {
    auto v = reinterpret_cast<uintptr_t>(h);
    // The null stream, CU_STREAM_LEGACY and CU_STREAM_PER_THREAD.
    return v <= 2 ? &legacy : static_cast<Stream*>(h);
}

CUresult run_until(Stream* s, uint64_t n) {
    while (s->done < n && !s->queue.empty()) {
        Op op = std::move(s->queue.front());
        s->queue.pop_front();
        s->done++;
        if (sticky == OK) {
            CUresult r = op();
            if (r != OK) sticky = r;
        }
    }
    return sticky;
}

CUresult drain_all() {
    run_until(&legacy, legacy.issued);
    for (Stream* s : streams) run_until(s, s->issued);
    return sticky;
}

// Queues `op` on `s`, or records it into the graph being captured if `capturable`.
CUresult enqueue(Stream* s, Op op, bool capturable, const char* what) {
    if (sticky != OK) return sticky;
    if (s->capture) {
        if (!capturable) {
            std::fprintf(stderr, "fake libcuda: %s while the stream is captured\n", what);
            s->invalidated = true;
            return STREAM_CAPTURE_UNSUPPORTED;
        }
        s->capture->ops.push_back(std::move(op));
        return OK;
    }
    s->queue.push_back(std::move(op));
    s->issued++;
    return OK;
}

// Refuses a call that would wait for the stream while it is captured.
bool capturing(Stream* s, const char* what) {
    if (!s->capture) return false;
    std::fprintf(stderr, "fake libcuda: %s while the stream is captured\n", what);
    s->invalidated = true;
    return true;
}

CUresult free_device(uintptr_t p) {
    auto it = device.find(p);
    if (it == device.end()) {
        std::fprintf(stderr, "fake libcuda: free of %p, which is not a live allocation\n", (void*)p);
        return INVALID_VALUE;
    }
    used -= it->second;
    retire((void*)p, it->second);
    device.erase(it);
    return OK;
}

const char* error_name(CUresult e) {
    switch (e) {
        case OK: return "CUDA_SUCCESS";
#define NAME(name, value) \
    case name: return "CUDA_ERROR_" #name;
        ERRORS(NAME)
#undef NAME
        default: return "CUDA_ERROR_UNKNOWN";
    }
}
}  // namespace

#define LOCKED std::lock_guard<std::mutex> lock(big)

extern "C" {
// Context and device.

CUresult cuInit(unsigned) { return OK; }

CUresult cuDriverGetVersion(int* v) {
    *v = 12080;
    return OK;
}

CUresult cuDeviceGetCount(int* n) {
    *n = 1;
    return OK;
}

CUresult cuDeviceGet(int* dev, int ordinal) {
    if (ordinal != 0) return INVALID_DEVICE;
    *dev = 0;
    return OK;
}

CUresult cuDeviceGetName(char* name, int len, int) {
    std::snprintf(name, len, "lossc fake CUDA driver (CPU)");
    return OK;
}

CUresult cuDeviceTotalMem_v2(size_t* bytes, int) {
    *bytes = TOTAL;
    return OK;
}

CUresult cuDeviceGetAttribute(int* v, int attr, int) {
    static const int sms = [] {
        const char* e = std::getenv("LOSSC_FAKE_CUDA_SMS");
        return e ? std::max(1, std::atoi(e)) : 1;
    }();
    switch (attr) {
        case 1: *v = 1024; return OK;   // MAX_THREADS_PER_BLOCK
        case 16: *v = sms; return OK;   // MULTIPROCESSOR_COUNT
        case 39: *v = 256; return OK;   // MAX_THREADS_PER_MULTIPROCESSOR
        case 75: *v = 9; return OK;     // COMPUTE_CAPABILITY_MAJOR
        case 76: *v = 0; return OK;     // COMPUTE_CAPABILITY_MINOR
        case 115: *v = 1; return OK;    // MEMORY_POOLS_SUPPORTED
        default:
            std::fprintf(stderr, "fake libcuda: device attribute %d is not known here\n", attr);
            return INVALID_VALUE;
    }
}

CUresult cuDevicePrimaryCtxRetain(void** ctx, int) {
    *ctx = &the_context;
    return OK;
}

CUresult cuDevicePrimaryCtxRelease_v2(int) { return OK; }

CUresult cuCtxSetCurrent(void* ctx) {
    current = ctx;
    return OK;
}

CUresult cuCtxGetCurrent(void** ctx) {
    *ctx = current;
    return OK;
}

CUresult cuCtxPushCurrent_v2(void* ctx) {
    pushed.push_back(current);
    current = ctx;
    return OK;
}

CUresult cuCtxPopCurrent_v2(void** ctx) {
    if (pushed.empty()) return INVALID_VALUE;
    if (ctx) *ctx = current;
    current = pushed.back();
    pushed.pop_back();
    return OK;
}

CUresult cuCtxSynchronize() {
    LOCKED;
    return drain_all();
}

CUresult cuDeviceGetDefaultMemPool(void** pool, int) {
    *pool = &the_pool;
    return OK;
}

CUresult cuMemPoolSetAttribute(void*, int, void*) { return OK; }

CUresult cuGetErrorName(CUresult e, const char** s) {
    *s = error_name(e);
    return OK;
}

CUresult cuGetErrorString(CUresult e, const char** s) {
    *s = error_name(e);
    return OK;
}

// Memory.

CUresult cuMemGetInfo_v2(size_t* free, size_t* total) {
    LOCKED;
    *free = TOTAL - used, *total = TOTAL;
    return sticky;
}

CUresult cuMemAllocAsync(uintptr_t* p, size_t bytes, void* stream) {
    LOCKED;
    if (sticky != OK) return sticky;
    if (capturing(of(stream), "an allocation")) return STREAM_CAPTURE_UNSUPPORTED;
    if (used + bytes > TOTAL) return OUT_OF_MEMORY;
    void* m = take(bytes, 256);
    if (!m) return OUT_OF_MEMORY;
    *p = reinterpret_cast<uintptr_t>(m);
    device[*p] = bytes;
    used += bytes;
    peak = std::max(peak, used);
    return OK;
}

CUresult cuMemAlloc_v2(uintptr_t* p, size_t bytes) { return cuMemAllocAsync(p, bytes, nullptr); }

CUresult cuMemFreeAsync(uintptr_t p, void* stream) {
    LOCKED;
    if (sticky != OK) return sticky;
    if (!device.count(p)) return free_device(p);
    return enqueue(of(stream), [p] { return free_device(p); }, false, "a free");
}

CUresult cuMemFree_v2(uintptr_t p) {
    LOCKED;
    if (drain_all() != OK) return sticky;
    return free_device(p);
}

CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned) {
    LOCKED;
    *p = take(bytes, 4096);
    if (!*p) return OUT_OF_MEMORY;
    pinned[reinterpret_cast<uintptr_t>(*p)] = bytes;
    return OK;
}

CUresult cuMemAllocHost_v2(void** p, size_t bytes) { return cuMemHostAlloc(p, bytes, 0); }

CUresult cuMemFreeHost(void* p) {
    LOCKED;
    auto it = pinned.find(reinterpret_cast<uintptr_t>(p));
    if (it == pinned.end()) return INVALID_VALUE;
    // Not waited for: a copy still queued from here reads NaN.
    retire(p, it->second);
    pinned.erase(it);
    return OK;
}

CUresult cuMemsetD8Async(uintptr_t dst, unsigned char v, size_t n, void* stream) {
    LOCKED;
    if (!allocated(dst, n, "a memset")) return INVALID_VALUE;
    auto op = [dst, v, n]() -> CUresult {
        if (!allocated(dst, n, "a memset")) return ILLEGAL_ADDRESS;
        std::memset((void*)dst, v, n);
        return OK;
    };
    return enqueue(of(stream), op, true, "a memset");
}

CUresult cuMemcpyHtoDAsync_v2(uintptr_t dst, const void* src, size_t n, void* stream) {
    LOCKED;
    if (!allocated(dst, n, "a copy to the device")) return INVALID_VALUE;
    // From pinned memory the bytes are read when the copy runs; from pageable memory they are
    // taken now, since the caller may reuse its memory as soon as this returns.
    std::shared_ptr<std::vector<char>> taken;
    if (!inside(pinned, reinterpret_cast<uintptr_t>(src), n)) {
        taken = std::make_shared<std::vector<char>>((const char*)src, (const char*)src + n);
    }
    auto op = [=]() -> CUresult {
        if (!allocated(dst, n, "a copy to the device")) return ILLEGAL_ADDRESS;
        std::memcpy((void*)dst, taken ? taken->data() : src, n);
        return OK;
    };
    return enqueue(of(stream), op, false, "a copy to the device");
}

CUresult cuMemcpyDtoHAsync_v2(void* dst, uintptr_t src, size_t n, void* stream) {
    LOCKED;
    if (!allocated(src, n, "a copy to the host")) return INVALID_VALUE;
    Stream* s = of(stream);
    auto op = [=]() -> CUresult {
        if (!allocated(src, n, "a copy to the host")) return ILLEGAL_ADDRESS;
        std::memcpy(dst, (const void*)src, n);
        return OK;
    };
    if (CUresult r = enqueue(s, op, false, "a copy to the host"); r != OK) return r;
    // Into pageable memory the copy has ended when the call returns.
    if (!inside(pinned, reinterpret_cast<uintptr_t>(dst), n)) return run_until(s, s->issued);
    return OK;
}

// Streams and events.

CUresult cuStreamCreate(void** stream, unsigned) {
    LOCKED;
    streams.push_back(new Stream);
    *stream = streams.back();
    return OK;
}

// The stream's queued work still runs (here, now); the stream itself is kept, for events that
// name it.
CUresult cuStreamDestroy_v2(void* stream) {
    LOCKED;
    Stream* s = of(stream);
    return run_until(s, s->issued);
}

CUresult cuStreamSynchronize(void* stream) {
    LOCKED;
    Stream* s = of(stream);
    if (capturing(s, "a stream synchronisation")) return STREAM_CAPTURE_UNSUPPORTED;
    return run_until(s, s->issued);
}

CUresult cuEventCreate(void** event, unsigned) {
    *event = new Event;
    return OK;
}

CUresult cuEventDestroy_v2(void* event) {
    delete static_cast<Event*>(event);
    return OK;
}

CUresult cuEventRecord(void* event, void* stream) {
    LOCKED;
    Stream* s = of(stream);
    if (capturing(s, "an event record")) return STREAM_CAPTURE_UNSUPPORTED;
    auto* e = static_cast<Event*>(event);
    e->stream = s, e->at = s->issued;
    return sticky;
}

CUresult cuEventSynchronize(void* event) {
    LOCKED;
    auto* e = static_cast<Event*>(event);
    return e->stream ? run_until(e->stream, e->at) : sticky;
}

// Runs the work the event waits for: a caller that polls would otherwise wait for ever.
CUresult cuEventQuery(void* event) { return cuEventSynchronize(event); }

CUresult cuStreamWaitEvent(void* stream, void* event, unsigned) {
    LOCKED;
    if (capturing(of(stream), "a wait for an event")) return STREAM_CAPTURE_UNSUPPORTED;
    auto* e = static_cast<Event*>(event);
    return e->stream ? run_until(e->stream, e->at) : sticky;
}

// Modules and launches.

CUresult cuModuleLoadData(void** module, const void* image) {
    static const std::string tag = "// lossc fake PTX\n";
    std::string ptx = static_cast<const char*>(image);
    if (ptx.compare(0, tag.size(), tag) != 0) {
        say("a module not built by the fake NVRTC (real PTX, or a damaged file) cannot run here; the fake "
            "libnvrtc.so must come first on the library path");
        return INVALID_IMAGE;
    }
    std::string path = ptx.substr(tag.size(), ptx.find('\n', tag.size()) - tag.size());
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        say(dlerror());
        return INVALID_IMAGE;
    }
    *module = new Module{lib};
    return OK;
}

// Launches still queued keep using the module's code, so the library stays loaded.
CUresult cuModuleUnload(void* module) {
    delete static_cast<Module*>(module);
    return OK;
}

CUresult cuModuleGetFunction(void** f, void* module, const char* name) {
    void* bind = dlsym(static_cast<Module*>(module)->lib, (std::string("fake_bind_") + name).c_str());
    if (!bind) return NOT_FOUND;
    *f = new Function{reinterpret_cast<fake::Bind>(bind), name};
    return OK;
}

CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void* stream, void** params, void** extra) {
    LOCKED;
    if (sticky != OK) return sticky;
    auto* fn = static_cast<Function*>(f);
    if (gy != 1 || gz != 1 || by != 1 || bz != 1 || shared != 0 || extra) {
        say("only one-dimensional launches without dynamic shared memory or `extra` are emulated");
        return NOT_SUPPORTED;
    }
    if (gx == 0 || gx > 2147483647u || bx == 0 || bx > 1024 || bx % 32 != 0) {
        std::fprintf(stderr, "fake libcuda: %s: a launch of %u blocks of %u threads\n", fn->name.c_str(), gx, bx);
        return INVALID_VALUE;
    }
    std::shared_ptr<fake::Launch> l(fn->bind(params));
    std::string name = fn->name;
    auto op = [l, name, gx, bx]() -> CUresult {
        for (const void* p : l->pointers()) {
            if (p && !inside(device, reinterpret_cast<uintptr_t>(p), 0)) {
                std::fprintf(stderr, "fake libcuda: %s is given %p, outside every live allocation\n", name.c_str(), p);
                return ILLEGAL_ADDRESS;
            }
        }
        if (!dry) l->run(gx, bx);
        return OK;
    };
    return enqueue(of(stream), op, true, "a launch");
}

// Graphs.

CUresult cuStreamBeginCapture_v2(void* stream, int) {
    LOCKED;
    Stream* s = of(stream);
    if (s->capture) return ILLEGAL_STATE;
    s->capture = new Graph;
    s->invalidated = false;
    return sticky;
}

CUresult cuStreamEndCapture(void* stream, void** graph) {
    LOCKED;
    Stream* s = of(stream);
    if (!s->capture) return ILLEGAL_STATE;
    Graph* g = s->capture;
    s->capture = nullptr;
    if (s->invalidated) {
        delete g;
        *graph = nullptr;
        return STREAM_CAPTURE_INVALIDATED;
    }
    *graph = g;
    return sticky;
}

CUresult cuStreamIsCapturing(void* stream, int* status) {
    LOCKED;
    Stream* s = of(stream);
    *status = !s->capture ? 0 : s->invalidated ? 2 : 1;
    return sticky;
}

CUresult cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long) {
    *exec = new Graph(*static_cast<Graph*>(graph));
    return OK;
}

CUresult cuGraphLaunch(void* exec, void* stream) {
    LOCKED;
    Stream* s = of(stream);
    if (capturing(s, "a graph launch")) return STREAM_CAPTURE_UNSUPPORTED;
    for (const Op& op : static_cast<Graph*>(exec)->ops) {
        if (CUresult r = enqueue(s, op, false, "a graph launch"); r != OK) return r;
    }
    return OK;
}

CUresult cuGraphUpload(void*, void*) { return OK; }

// A replay still queued holds copies of the graph's operations.
CUresult cuGraphExecDestroy(void* exec) {
    delete static_cast<Graph*>(exec);
    return OK;
}

CUresult cuGraphDestroy(void* graph) {
    delete static_cast<Graph*>(graph);
    return OK;
}
}
