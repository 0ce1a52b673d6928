// A fake NVRTC for the fake CUDA driver (libcuda.cpp): "compiling" CUDA C builds it for the CPU
// with g++ and the emulator (fake_kernel.h), as a shared library of `fake_bind_<kernel>`
// functions, one for each `__global__` function of the source; the "PTX" it hands back names
// that library, which only the fake driver can load. Libraries are kept in FAKE_CACHE_DIR by a
// hash of the source and the emulator's headers, so a process that compiles the same kernels
// again (every test process does) loads them at once.
//
// Built by build-fake.sh with FAKE_SOURCE_DIR (this directory) and FAKE_CACHE_DIR.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

namespace {
enum Result { SUCCESS = 0, ERROR_INVALID_INPUT = 3, ERROR_INVALID_PROGRAM = 5, ERROR_COMPILATION = 6 };

struct Program {
    std::string src, ptx, log;
};

std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

uint64_t fnv1a(const std::string& s, uint64_t h = 1469598103934665603ull) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return h;
}

// The source with a binder for each kernel appended.
std::string with_binders(const std::string& src) {
    std::string out = src + "\n";
    static const std::regex global(R"(__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\()");
    for (auto it = std::sregex_iterator(src.begin(), src.end(), global); it != std::sregex_iterator(); ++it) {
        std::string name = (*it)[1];
        out += "extern \"C\" fake::Launch* fake_bind_" + name + "(void** p) { return fake::bind(&" + name + ", p); }\n";
    }
    return out;
}

// How g++ builds a module (the hash of a module covers it).
const std::string GXX = std::string("g++ -std=c++20 -O1 -shared -fPIC -pthread -include fake_kernel.h") + FAKE_EXTRA_FLAGS;

// The command and the headers every module is built with: part of each module's hash.
const std::string& headers() {
    const std::string dir = FAKE_SOURCE_DIR;
    static const std::string text =
        GXX + slurp(dir + "/emu.h") + slurp(dir + "/fake_kernel.h") + slurp(dir + "/fake_launch.h");
    return text;
}

Result compile(Program& p) {
    // LOSSC_FAKE_NVRTC_REFUSE=TEXT: a source containing TEXT fails as one that does not
    // compile, so that a test can make one loss kernel of a population fail to build.
    const char* refuse = std::getenv("LOSSC_FAKE_NVRTC_REFUSE");
    if (refuse && *refuse && p.src.find(refuse) != std::string::npos) {
        p.log = std::string("fake nvrtc: refused a source containing `") + refuse + "` (LOSSC_FAKE_NVRTC_REFUSE)\n";
        return ERROR_COMPILATION;
    }
    const std::string dir = FAKE_SOURCE_DIR, cache = FAKE_CACHE_DIR;
    char hash[17];
    std::snprintf(hash, sizeof hash, "%016llx", (unsigned long long)fnv1a(p.src, fnv1a(headers())));
    std::string so = cache + "/m_" + hash + ".so";
    if (access(so.c_str(), R_OK) != 0) {
        // Built under a name of its own, then renamed: processes compiling the same source at
        // once each load a whole library.
        std::string tmp = cache + "/m_" + hash + "." + std::to_string(getpid()) + "." +
                          std::to_string((unsigned long long)(uintptr_t)&p);
        mkdir(cache.c_str(), 0755);
        std::ofstream(tmp + ".cpp") << with_binders(p.src);
        std::string cmd =
            GXX + " -I'" + dir + "' '" + tmp + ".cpp' -o '" + tmp + ".so' 2> '" + tmp + ".log'";
        int rc = std::system(cmd.c_str());
        p.log = slurp(tmp + ".log");
        std::remove((tmp + ".cpp").c_str());
        std::remove((tmp + ".log").c_str());
        if (rc != 0) {
            std::remove((tmp + ".so").c_str());
            return ERROR_COMPILATION;
        }
        std::rename((tmp + ".so").c_str(), so.c_str());
    }
    p.ptx = "// lossc fake PTX\n" + so + "\n";
    return SUCCESS;
}
// A program's PTX or log as NVRTC hands them out: the size with the closing NUL, then the text.
int size_of(Program* prog, std::string Program::*text, size_t* size) {
    if (!prog) return ERROR_INVALID_PROGRAM;
    *size = (prog->*text).size() + 1;
    return SUCCESS;
}

int copy_of(Program* prog, std::string Program::*text, char* out) {
    if (!prog) return ERROR_INVALID_PROGRAM;
    std::memcpy(out, (prog->*text).c_str(), (prog->*text).size() + 1);
    return SUCCESS;
}
}  // namespace

extern "C" {
// No real NVRTC's version (major 0), so that what is cached for this one (runtime/src/cuda.rs,
// `cached_ptx`) is never taken for a real NVRTC's PTX; the minor is the headers' hash, so that
// "PTX" cached before the emulator changed (it names a module built with it) is not taken either.
int nvrtcVersion(int* major, int* minor) {
    *major = 0, *minor = (int)(fnv1a(headers()) & 0x7fffffff);
    return SUCCESS;
}

int nvrtcCreateProgram(Program** prog, const char* src, const char*, int num_headers, const char* const*,
                       const char* const*) {
    if (!prog || !src) return ERROR_INVALID_INPUT;
    if (num_headers != 0) {
        std::fprintf(stderr, "fake nvrtc: headers are not supported\n");
        return ERROR_INVALID_INPUT;
    }
    *prog = new Program{src, "", ""};
    return SUCCESS;
}

int nvrtcDestroyProgram(Program** prog) {
    if (!prog || !*prog) return ERROR_INVALID_PROGRAM;
    delete *prog;
    *prog = nullptr;
    return SUCCESS;
}

// The options (the architecture, say) do not change a build for the CPU.
int nvrtcCompileProgram(Program* prog, int, const char* const*) {
    if (!prog) return ERROR_INVALID_PROGRAM;
    return compile(*prog);
}

int nvrtcGetPTXSize(Program* prog, size_t* size) { return size_of(prog, &Program::ptx, size); }

int nvrtcGetPTX(Program* prog, char* ptx) { return copy_of(prog, &Program::ptx, ptx); }

int nvrtcGetProgramLogSize(Program* prog, size_t* size) { return size_of(prog, &Program::log, size); }

int nvrtcGetProgramLog(Program* prog, char* log) { return copy_of(prog, &Program::log, log); }

const char* nvrtcGetErrorString(int result) {
    switch (result) {
        case SUCCESS: return "NVRTC_SUCCESS";
        case ERROR_INVALID_INPUT: return "NVRTC_ERROR_INVALID_INPUT";
        case ERROR_INVALID_PROGRAM: return "NVRTC_ERROR_INVALID_PROGRAM";
        case ERROR_COMPILATION: return "NVRTC_ERROR_COMPILATION";
        default: return "NVRTC_ERROR (fake nvrtc)";
    }
}
}
