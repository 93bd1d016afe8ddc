// The operators a program's execution plans name ("aten::add.out", "llama::custom_sdpa.out", ...),
// read from its flatbuffer, so a runner can name what it lacks before loading anything.
#pragma once

#include <string>
#include <vector>

#include "llm_session.h"

namespace dlm {

// Fails (kExitBadInput) with one line when the file is not a valid ExecuTorch program.
Status ReadProgramOperators(const std::string& pte_path, std::vector<std::string>* ops);

}  // namespace dlm
