// CUDA threads on fibers. A fiber is made once with makecontext (its own stack), then switched
// with _setjmp/_longjmp, which save no signal mask. Fibers are pooled: a thread takes one when it
// starts, and gives it back when it returns; only a thread waiting at a barrier holds one. A fiber
// whose thread returns goes straight on with the next thread of the sweep, so a block that never
// waits runs all its threads one after another on one hot stack, with no switch at all.
//
// Only the scheduler (on the launching OS thread's stack) or one fiber runs at any time, and the
// driver serialises launches, so this state is global.

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

struct Fiber;

struct Thread
{
    State state = DONE;
    uint3 tid{0, 0, 0};
    Fiber* fiber = nullptr;       // while started and not returned
    const char* file = nullptr;   // the barrier it waits at
    int line = 0;
    long long barriers = 0;       // block barriers passed
};

struct Fiber
{
    jmp_buf resumePoint;
    ucontext_t context;
    char* stack = nullptr;
    size_t stackSize = 0;
    unsigned thread = 0;          // the thread it runs
    void* asanFake = nullptr;
};

std::vector<Fiber*> allFibers, freeFibers;
std::vector<Thread> threads;
unsigned cursor = 0;              // the sweep's position
bool rebuild = false;
Fiber* running = nullptr;
jmp_buf schedulerPoint;
ucontext_t creatorContext;
Fiber* creating = nullptr;
const Launch* current = nullptr;
Env* currentEnv = nullptr;
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
    if (_setjmp(self->resumePoint) == 0) swapcontext(&self->context, &creatorContext);  // parked until first use
    if (__sanitizer_finish_switch_fiber) __sanitizer_finish_switch_fiber(self->asanFake, &mainBottom, &mainSize);
    for (;;)
    {
        currentEnv->threadIdx = threads[self->thread].tid;
        current->info->call(current->info->kernel, current->args);
        Thread& done = threads[self->thread];
        done.state = DONE;
        done.fiber = nullptr;
        // go straight on with the sweep's next thread when it has not started yet
        cursor = self->thread + 1;
        if (cursor < threads.size() && threads[cursor].state == READY && !threads[cursor].fiber)
        {
            self->thread = cursor;
            threads[cursor].fiber = self;
            continue;
        }
        freeFibers.push_back(self);
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
    ucontext_t start;
    getcontext(&start);
    start.uc_stack.ss_sp = f->stack;
    // stagger the stacks' tops across cache sets: equal-sized stacks would put every fiber's hot top
    // frames at the same offset modulo the page, all competing for the same few cache lines
    start.uc_stack.ss_size = f->stackSize - (allFibers.size() % 61) * 64;
    start.uc_link = nullptr;
    makecontext(&start, fiberMain, 0);
    creating = f;
    swapcontext(&creatorContext, &start);
    allFibers.push_back(f);
    return f;
}

Fiber* takeFiber()
{
    if (freeFibers.empty()) return makeFiber();
    Fiber* f = freeFibers.back();
    freeFibers.pop_back();
    return f;
}

void destroyFibers()
{
    for (Fiber* f : allFibers)
    {
        munmap(f->stack, f->stackSize);
        delete f;
    }
    allFibers.clear();
    freeFibers.clear();
}

void resume(Fiber* f)
{
    running = f;
    if (__sanitizer_start_switch_fiber) __sanitizer_start_switch_fiber(&schedulerFake, f->stack, f->stackSize);
    if (_setjmp(schedulerPoint) == 0) _longjmp(f->resumePoint, 1);
    if (__sanitizer_finish_switch_fiber) __sanitizer_finish_switch_fiber(schedulerFake, nullptr, nullptr);
    running = nullptr;
}

std::string where(const Thread& t)
{
    char text[64];
    snprintf(text, sizeof text, "thread (%u,%u,%u)", t.tid.x, t.tid.y, t.tid.z);
    return text;
}

std::string site(const Thread& t)
{
    return std::string(t.file ? t.file : "?") + ":" + std::to_string(t.line);
}

void block(State state, const char* file, int line)
{
    Fiber* self = running;
    Thread& t = threads[self->thread];
    t.state = state;
    t.file = file;
    t.line = line;
    cursor = self->thread;
    toScheduler(self);
    currentEnv->threadIdx = threads[self->thread].tid;
}

void syncthreads(const char* file, int line) { block(AT_BARRIER, file, line); }
void syncwarp(const char* file, int line) { block(AT_WARP, file, line); }

// everyone is blocked or done: release what may go on, or say why the block cannot finish
bool release(std::string& error)
{
    const Thread* waiting = nullptr;
    const Thread* finished = nullptr;
    bool warp = false;
    for (Thread& t : threads)
    {
        if (t.state == AT_WARP)
        {
            t.state = READY;
            warp = true;
        }
        else if (t.state == AT_BARRIER && !waiting) waiting = &t;
        else if (t.state == DONE && !finished) finished = &t;
    }
    if (warp || !waiting) return true;
    if (finished)
    {
        error = "divergent __syncthreads(): " + where(*waiting) + " waits at " + site(*waiting) + " but " +
                where(*finished) + " has returned (every thread of a block must reach each barrier)";
        return false;
    }
    for (const Thread& t : threads)
    {
        if (t.line != waiting->line || t.file != waiting->file || t.barriers != waiting->barriers)
        {
            error = "divergent __syncthreads(): " + where(*waiting) + " waits at " + site(*waiting) + " (barrier #" +
                    std::to_string(waiting->barriers + 1) + ") while " + where(t) + " waits at " + site(t) +
                    " (barrier #" + std::to_string(t.barriers + 1) + ")";
            return false;
        }
    }
    for (Thread& t : threads)
    {
        t.state = READY;
        t.barriers++;
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
    if (rebuild)
    {
        destroyFibers();
        rebuild = false;
    }
    env.syncthreads = syncthreads;
    env.syncwarp = syncwarp;
    current = &launch;
    currentEnv = &env;
    const dim3 b = launch.block;
    threads.assign(b.x * b.y * b.z, Thread());
    for (unsigned i = 0; i < threads.size(); i++)
    {
        threads[i].state = READY;
        threads[i].tid = uint3{i % b.x, (i / b.x) % b.y, i / (b.x * b.y)};
    }
    for (;;)
    {
        cursor = 0;
        while (cursor < threads.size())
        {
            Thread& t = threads[cursor];
            if (t.state != READY)
            {
                cursor++;
                continue;
            }
            if (!t.fiber)
            {
                t.fiber = takeFiber();
                t.fiber->thread = cursor;
            }
            resume(t.fiber);  // back when a thread blocks (cursor: that thread) or a sweep run ends
        }
        bool live = false;
        for (const Thread& t : threads) live |= t.state != DONE;
        if (!live) return true;
        if (!release(error))
        {
            // the blocked threads' fibers sit inside the kernel: make fresh ones next time
            for (Thread& t : threads) t.fiber = nullptr;
            resetFibers();
            return false;
        }
    }
}

}  // namespace cuemu
