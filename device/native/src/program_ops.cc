#include "program_ops.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include <executorch/schema/program_generated.h>

namespace dlm {

Status ReadProgramOperators(const std::string& pte_path, std::vector<std::string>* ops,
                            std::vector<std::string>* buffer_names) {
  const int fd = open(pte_path.c_str(), O_RDONLY);
  if (fd < 0) return Status::BadInput(pte_path + ": cannot open the program file");
  struct stat st {};
  if (fstat(fd, &st) != 0 || st.st_size < 16) {
    close(fd);
    return Status::BadInput(pte_path + ": not an ExecuTorch program (file too small)");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return Status::BadInput(pte_path + ": cannot map the program file");
  const auto* data = static_cast<const uint8_t*>(map);
  Status result;
  if (!executorch_flatbuffer::ProgramBufferHasIdentifier(data)) {
    result = Status::BadInput(pte_path + ": not an ExecuTorch program (no ET flatbuffer identifier)");
  } else {
    flatbuffers::Verifier verifier(data, size, /*max_depth=*/64, /*max_tables=*/100000000);
    if (!executorch_flatbuffer::VerifyProgramBuffer(verifier)) {
      result = Status::BadInput(pte_path + ": corrupt ExecuTorch program (flatbuffer verification failed)");
    } else {
      const auto* plans = executorch_flatbuffer::GetProgram(data)->execution_plan();
      for (size_t p = 0; plans != nullptr && p < plans->size(); p++) {
        const auto* list = plans->Get(p)->operators();
        for (size_t i = 0; list != nullptr && i < list->size(); i++) {
          const auto* op = list->Get(i);
          std::string name = op->name() ? op->name()->str() : "";
          if (op->overload() && op->overload()->size() > 0) name += "." + op->overload()->str();
          if (std::find(ops->begin(), ops->end(), name) == ops->end()) ops->push_back(name);
        }
        const auto* values = plans->Get(p)->values();
        for (size_t i = 0; buffer_names != nullptr && values != nullptr && i < values->size(); i++) {
          const auto* v = values->Get(i);
          if (v->val_type() != executorch_flatbuffer::KernelTypes::Tensor) continue;
          const auto* info = static_cast<const executorch_flatbuffer::Tensor*>(v->val())->extra_tensor_info();
          if (info != nullptr && info->fully_qualified_name() != nullptr)
            buffer_names->push_back(info->fully_qualified_name()->str());
        }
      }
    }
  }
  munmap(map, size);
  return result;
}

}  // namespace dlm
