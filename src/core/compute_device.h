// Where a command's tensors live, chosen from a device setting: cpu, cuda, or auto (cuda when a
// GPU is visible). One place decides it for training and inference alike.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "core/allocator.h"

namespace strata {

// The allocator of the run's tensors: a CudaDevice or null for the CPU. The GPU is number
// local_rank modulo the GPUs this process sees: one rank per GPU when a node starts as many ranks
// as it has GPUs (or each rank sees one, through CUDA_VISIBLE_DEVICES), ranks sharing GPUs round
// robin when there are more.
// `setting` names the key or option in messages ("key 'train.device'", "--device").
// `not_covered`: why this run cannot use a GPU yet, empty when it can; cuda then fails with that
// reason, auto warns and stays on the CPU. cuda without a GPU (or a build without the backend)
// fails too.
std::shared_ptr<Allocator> select_device(std::string_view setting, const std::string& want,
                                         const std::string& not_covered, int local_rank = 0);

}  // namespace strata
