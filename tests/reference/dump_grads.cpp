// Strata's own side of the PyTorch reference check (scripts/reference/strata_torch.py): one forward
// and one backward of a checkpoint's model on the CPU or the CUDA backend, for a given batch, written to HDF5 so an
// independent implementation can be compared with it tensor by tensor.
//
// usage:
//   dump_grads corpus DIR
//       DIR/train.h5 and DIR/val.h5: the synthetic corpus the trainer tests use
//       (tests/synthetic_corpus.h), so the reference test needs no downloaded data.
//   dump_grads CHECKPOINT IDS OUT [f32|f64 [cpu|cuda]]
//       The checkpoint's model (its manifest's config, one process) in f32 (default) or f64, on
//       the CPU (default) or the CUDA device (a GPU, or the simulated GPU in the gpusim build), its
//       weights loaded (cast when stored in another dtype), on the batch of IDS (HDF5: /ids and
//       /targets, int32 [batch, seq]; a negative target is ignored). OUT (HDF5) gets:
//         /loss      f64 scalar: the mean cross-entropy over the targets that count
//         /aux_loss  f64 scalar: the MoE auxiliary losses with their coefficients (0 when dense)
//         /logits    [batch * seq, vocab] in the model's dtype
//         /grad/NAME every parameter's gradient of loss + aux_loss (backward with scale 1), in the
//                    model's dtype
//         /moe/LAYER/{chosen,load,dropped}  int64: what each MoE layer routed
//       and the attributes dtype ("f32"/"f64") and device ("cpu"/"cuda") on the root. Every
//       device's dump has the same layout, so the script compares any of them.
#include <hdf5.h>

#include <cstdio>
#include <string>
#include <vector>

#include "core/compute_device.h"
#include "core/error.h"
#include "core/h5.h"
#include "infer/generate.h"
#include "kernels/ops.h"
#include "model/transformer.h"
#include "synthetic_corpus.h"
#include "tools/convert.h"

namespace strata {
namespace {

// Writes `tensor` as dataset `name` of `file`, creating the groups its path names.
void write_dataset(hid_t file, const std::string& name, const Tensor& tensor) {
  h5::Handle groups(STRATA_HDF5_CHECK(H5Pcreate(H5P_LINK_CREATE)), H5Pclose);
  STRATA_HDF5_CHECK(H5Pset_create_intermediate_group(groups, 1));
  const Tensor t = tensor.to_cpu();
  std::vector<hsize_t> dims(t.shape().begin(), t.shape().end());
  h5::Handle space(STRATA_HDF5_CHECK(t.ndim() == 0 ? H5Screate(H5S_SCALAR)
                                                   : H5Screate_simple(static_cast<int>(dims.size()),
                                                                      dims.data(), nullptr)),
                   H5Sclose);
  h5::Handle dataset(STRATA_HDF5_CHECK(H5Dcreate2(file, name.c_str(), h5::file_type(t.dtype()),
                                                  space, groups, H5P_DEFAULT, H5P_DEFAULT)),
                     H5Dclose);
  if (t.numel() > 0)
    STRATA_HDF5_CHECK(
        H5Dwrite(dataset, h5::memory_type(t.dtype()), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()));
}

void write_scalar(hid_t file, const std::string& name, double value) {
  write_dataset(file, name, Tensor::from_vector(std::vector<double>{value}, {}));
}

Tensor read_i32(hid_t file, const std::string& name, const std::string& path) {
  h5::Handle dataset = h5::open_dataset(file, name, path);
  const std::vector<int64_t> shape = h5::dataset_shape(dataset);
  STRATA_CHECK(shape.size() == 2, "ids file '", path, "': /", name, " must be [batch, seq], has ",
               shape.size(), " dims");
  Tensor t = Tensor::empty({shape[0], shape[1]}, DType::i32);
  STRATA_HDF5_CHECK(H5Dread(dataset, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()));
  return t;
}

int dump(const std::string& checkpoint, const std::string& ids_path, const std::string& out_path,
         const std::string& dtype_name, const std::string& device_name) {
  STRATA_CHECK(dtype_name == "f32" || dtype_name == "f64",
               "dump_grads: dtype must be f32 or f64, got '", dtype_name, "'");
  const DType dtype = dtype_name == "f64" ? DType::f64 : DType::f32;
  const Config config = checkpoint_config(checkpoint);
  h5::silence_library_errors();
  Tensor ids, targets;
  {
    h5::Handle file = h5::open_file(ids_path);
    ids = read_i32(file, "ids", ids_path);
    targets = read_i32(file, "targets", ids_path);
  }
  STRATA_CHECK(ids.shape() == targets.shape(), "ids file '", ids_path, "': /ids ", ids.describe(),
               " and /targets ", targets.describe(), " differ in shape");

  // On "cuda" the model runs on the CUDA backend (a GPU, or the simulated one in a gpusim build).
  const std::shared_ptr<Allocator> device = select_device("dump_grads device", device_name, "");
  Transformer model(config.model, dtype, {}, {}, {}, {}, ParamStorage{.allocator = device.get()});
  load_weights(model, checkpoint);
  model.params().zero_grads();
  const double loss = model.forward(ids, targets, Recompute::none);
  const double aux_loss = model.aux_loss();
  // backward reuses the logits' buffer for their gradient: keep a copy first.
  Tensor logits_copy = Tensor::empty(model.logits().shape(), model.logits().dtype());
  logits_copy.copy_from(model.logits());
  model.backward(1.0);

  h5::Handle file = h5::create_file(out_path);
  write_scalar(file, "loss", loss);
  write_scalar(file, "aux_loss", aux_loss);
  write_dataset(file, "logits", logits_copy);
  for (const auto& p : model.params().all()) write_dataset(file, "grad/" + p->name, p->grad);
  for (const auto& [layer, r] : model.routing_log()) {
    const std::string at = "moe/" + std::to_string(layer) + "/";
    const auto n = static_cast<int64_t>(r.chosen.size());
    write_dataset(file, at + "chosen", Tensor::from_vector(r.chosen, {n}));
    write_dataset(file, at + "load", Tensor::from_vector(r.load, {n}));
    write_dataset(file, at + "dropped", Tensor::from_vector(std::vector<int64_t>{r.dropped}, {1}));
  }
  h5::write_attribute(file, "dtype", dtype_name);
  h5::write_attribute(file, "device", device ? std::string("cuda") : std::string("cpu"));
  std::printf("dump_grads: %s, %lld parameters, loss %.9g, aux_loss %.9g -> %s\n",
              dtype_name.c_str(), static_cast<long long>(model.params().all().size()), loss,
              aux_loss, out_path.c_str());
  return 0;
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() == 2 && args[0] == "corpus") {
      strata::testing::write_synthetic_corpus(args[1]);
      return 0;
    }
    if (args.size() >= 3 && args.size() <= 5)
      return strata::dump(args[0], args[1], args[2], args.size() >= 4 ? args[3] : "f32",
                          args.size() == 5 ? args[4] : "cpu");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dump_grads: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: dump_grads corpus DIR | dump_grads CHECKPOINT IDS OUT [f32|f64 [cpu|cuda]]\n");
  return 2;
}
