// CUDA threads as fibers: each is made once with makecontext (its own stack), then switched with
// _setjmp/_longjmp, which save no signal mask and so cost a few nanoseconds. A fiber runs one CUDA
// thread after another: when its thread returns it parks, and the scheduler starts the next one
// on it. Only the scheduler (on the launching OS thread's stack) and one fiber run at any time;
// launches are serialised by the driver, so this state is global.

#include "fibers.h"

#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <sys/mman.h>
#include <ucontext.h>
#include <vector>

// AddressSanitizer must be told about stack switches; these exist only when libasan is loaded.
extern "C" {
void __sanitizer_start_switch_fiber(void** fakeStackSave, const void* bottom, size_t size) __attribute__((weak));
void __sanitizer_finish_switch_fiber(void* fakeStackSave, const void** bottomOld, size_t* sizeOld)
    __attribute__((weak));
}

namespace cuemu {
namespace {

enum State { READY, AT_BARRIER, AT_WARP, DONE };

struct Fiber
{
    jmp_buf resumePoint;
    char* stack = nullptr;
    size_t stackSize = 0;
    State state = DONE;
    uint3 tid{0, 0, 0};
    unsigned linear = 0;
    const char* file = nullptr;  // the barrier this thread waits at
    int line = 0;
    long long barriers = 0;      // how many block barriers this thread has passed
    void* asanFake = nullptr;
};

std::vector<Fiber*> fibers;
bool rebuild = false;
Fiber* running = nullptr;
jmp_buf schedulerPoint;
ucontext_t creatorContext;
Fiber* creating = nullptr;
const Launch* current = nullptr;
const void* mainBottom = nullptr;
size_t mainSize = 0;
void* schedulerFake = nullptr;

size_t stackBytes()
{
    const char* kb = getenv("CUEMU_STACK_KB");
    size_t k = kb ? strtoul(kb, nullptr, 10) : 0;
    if (!k) k = __sanitizer_start_switch_fiber ? 512 : 64;  // ASan's frames are larger
    return k * 1024;
}

void toScheduler(Fiber* self)
{
    if (__sanitizer_start_switch_fiber) __sanitizer_start_switch_fiber(&self->asanFake, mainBottom, mainSize);
    if (_setjmp(self->resumePoint) == 0) _longjmp(schedulerPoint, 1);
    if (__sanitizer_finish_switch_fiber) __sanitizer_finish_switch_fiber(self->asanFake, nullptr, nullptr);
}

void fiberMain()
{
    Fiber* self = creating;
    if (_setjmp(self->resumePoint) == 0)
    {
        // parked; the scheduler's first _longjmp lands below
        swapcontext(new ucontext_t, &creatorContext);
    }
    if (__sanitizer_finish_switch_fiber)
        __sanitizer_finish_switch_fiber(self->asanFake, &mainBottom, &mainSize);
    for (;;)
    {
        current->info->invoke(current->info->kernel, current->args);
        self->state = DONE;
        toScheduler(self);
    }
}

Fiber* makeFiber()
{
    Fiber* f = new Fiber;
    f->stackSize = stackBytes();
    void* mem = mmap(nullptr, f->stackSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED)
    {
        perror("cuemu: fiber stack");
        abort();
    }
    f->stack = static_cast<char*>(mem);
    ucontext_t* uc = new ucontext_t;
    getcontext(uc);
    uc->uc_stack.ss_sp = f->stack;
    uc->uc_stack.ss_size = f->stackSize;
    uc->uc_link = nullptr;
    makecontext(uc, fiberMain, 0);
    creating = f;
    swapcontext(&creatorContext, uc);
    return f;
}

void freeFibers()
{
    for (Fiber* f : fibers)
    {
        munmap(f->stack, f->stackSize);
        delete f;
    }
    fibers.clear();
}

void resume(Env& env, Fiber* f)
{
    running = f;
    env.threadIdx = f->tid;
    if (__sanitizer_start_switch_fiber) __sanitizer_start_switch_fiber(&schedulerFake, f->stack, f->stackSize);
    if (_setjmp(schedulerPoint) == 0) _longjmp(f->resumePoint, 1);
    if (__sanitizer_finish_switch_fiber) __sanitizer_finish_switch_fiber(schedulerFake, nullptr, nullptr);
    running = nullptr;
}

std::string where(const Fiber* f)
{
    char text[160];
    snprintf(text, sizeof text, "thread (%u,%u,%u)", f->tid.x, f->tid.y, f->tid.z);
    return text;
}

std::string site(const Fiber* f)
{
    return std::string(f->file ? f->file : "?") + ":" + std::to_string(f->line);
}

void syncthreads(const char* file, int line)
{
    Fiber* self = running;
    self->state = AT_BARRIER;
    self->file = file;
    self->line = line;
    toScheduler(self);
}

void syncwarp(const char* file, int line)
{
    Fiber* self = running;
    self->state = AT_WARP;
    self->file = file;
    self->line = line;
    toScheduler(self);
}

// everyone is blocked or done: release what may go on, or say why the block cannot finish
bool release(unsigned n, std::string& error)
{
    const Fiber* waiting = nullptr;
    const Fiber* finished = nullptr;
    bool warp = false;
    for (unsigned i = 0; i < n; i++)
    {
        Fiber* f = fibers[i];
        if (f->state == AT_WARP)
        {
            f->state = READY;
            warp = true;
        }
        else if (f->state == AT_BARRIER && !waiting) waiting = f;
        else if (f->state == DONE && !finished) finished = f;
    }
    if (warp || !waiting) return true;
    if (finished)
    {
        error = "divergent __syncthreads(): " + where(waiting) + " waits at " + site(waiting) + " but " +
                where(finished) + " has returned (every thread of a block must reach each barrier)";
        return false;
    }
    for (unsigned i = 0; i < n; i++)
    {
        Fiber* f = fibers[i];
        if (f->line != waiting->line || f->file != waiting->file || f->barriers != waiting->barriers)
        {
            error = "divergent __syncthreads(): " + where(waiting) + " waits at " + site(waiting) + " (barrier #" +
                    std::to_string(waiting->barriers + 1) + ") while " + where(f) + " waits at " + site(f) +
                    " (barrier #" + std::to_string(f->barriers + 1) + ")";
            return false;
        }
    }
    for (unsigned i = 0; i < n; i++)
    {
        fibers[i]->state = READY;
        fibers[i]->barriers++;
    }
    return true;
}

}  // namespace

void resetFibers()
{
    rebuild = true;
}

bool runBlock(Env& env, const Launch& launch, std::string& error)
{
    const unsigned n = launch.block.x * launch.block.y * launch.block.z;
    if (rebuild)
    {
        freeFibers();
        rebuild = false;
    }
    while (fibers.size() < n) fibers.push_back(makeFiber());
    env.syncthreads = syncthreads;
    env.syncwarp = syncwarp;
    current = &launch;
    for (unsigned i = 0; i < n; i++)
    {
        Fiber* f = fibers[i];
        f->state = READY;
        f->linear = i;
        f->tid = uint3{i % launch.block.x, (i / launch.block.x) % launch.block.y, i / (launch.block.x * launch.block.y)};
        f->barriers = 0;
        f->file = nullptr;
        f->line = 0;
    }
    for (;;)
    {
        bool anyLive = false;
        for (unsigned i = 0; i < n; i++)
        {
            if (fibers[i]->state == READY) resume(env, fibers[i]);
            anyLive |= fibers[i]->state != DONE;
        }
        if (!anyLive) return true;
        if (!release(n, error))
        {
            resetFibers();
            return false;
        }
    }
}

}  // namespace cuemu
