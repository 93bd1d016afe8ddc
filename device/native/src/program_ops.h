// The operators a program's execution plans name ("aten::add.out", "llama::custom_sdpa.out", ...),
// read from its flatbuffer, so a runner can name what it lacks before loading anything; and the
// fully qualified names of its mutable buffers (written when the program was lowered with
// emit_mutable_buffer_names, as export/lower.py does), so the runner can find its running state.
#pragma once

#include <string>
#include <vector>

#include "llm_session.h"

namespace dlm {

// Fails (kExitBadInput) with one line when the file is not a valid ExecuTorch program.
// `buffer_names` (optional) gets every named tensor of the plans, in plan order.
Status ReadProgramOperators(const std::string& pte_path, std::vector<std::string>* ops,
                            std::vector<std::string>* buffer_names = nullptr);

}  // namespace dlm
