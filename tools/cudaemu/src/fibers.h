// Runs one CUDA block on the host: every CUDA thread is a cooperative fiber, switched only at
// barriers, so __syncthreads, __shared__ and warp-synchronous stores keep their meaning.
#pragma once

#include <string>

#include "cuemu_abi.h"

namespace cuemu {

struct Launch
{
    const KernelInfo* info;
    const void* args;  // the parameters, unpacked (KernelInfo::unpack)
    dim3 block;
};

// Runs block `blockIdx` of `launch` to completion; false (and `error` says why) when the block
// hits a divergent barrier. Env's blockIdx must already be set.
bool runBlock(Env& env, const Launch& launch, std::string& error);

// Threads of the last failed block may sit inside the kernel: the next launch rebuilds them.
void resetFibers();

}  // namespace cuemu
