// Internal: the core's task pool (task_pool.cc), used when dlm_attn_args.parallel is NULL.
#pragma once
#include <stddef.h>

#include "deltaattn.h"

namespace dlm {
void run_on_task_pool(size_t n, dlm_task_fn task, void* ctx);
}  // namespace dlm
