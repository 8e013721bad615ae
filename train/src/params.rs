//! Parameters by name. The model's module paths are its Hugging Face tensor names (see
//! [`crate::model`]), so checkpoints, gradients and optimizer state are all keyed by the names
//! `tern_pack::spec::ModelSpec::tensors` lists.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor, TensorData};

use crate::error::{Result, TrainError};
use crate::model::Transformer;

/// A tensor on the host: shape and row-major f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads a tensor back to the host as f32.
pub fn to_host<const D: usize>(t: Tensor<D>) -> HostTensor {
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor data");
    HostTensor { shape, data }
}

/// Keeps a stack of module names, so that visitors know the dotted path of each parameter.
#[derive(Default)]
struct PathStack(Vec<String>);

impl PathStack {
    fn name(&self) -> String {
        self.0.join(".")
    }
}

struct Collect<F: FnMut(String, HostTensor)> {
    path: PathStack,
    sink: F,
}

impl<F: FnMut(String, HostTensor)> ModuleVisitor for Collect<F> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.0.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.0.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        (self.sink)(self.path.name(), to_host(param.val()));
    }
}

/// Every parameter of `model` on the host, by name, in module order.
pub fn collect(model: &Transformer) -> Vec<(String, HostTensor)> {
    let mut out = Vec::new();
    let mut v = Collect {
        path: PathStack::default(),
        sink: |name, t| out.push((name, t)),
    };
    model.visit(&mut v);
    out
}

struct GradCollect<'a> {
    path: PathStack,
    grads: &'a Gradients,
    out: BTreeMap<String, Tensor<1>>,
}

impl ModuleVisitor for GradCollect<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.0.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.0.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            let n = g.shape().num_elements();
            self.out.insert(self.path.name(), g.reshape([n]));
        }
    }
}

/// The gradient of every parameter that has one, flattened, by name.
pub fn gradients(model: &Transformer, grads: &Gradients) -> BTreeMap<String, Tensor<1>> {
    let mut v = GradCollect {
        path: PathStack::default(),
        grads,
        out: BTreeMap::new(),
    };
    model.visit(&mut v);
    v.out
}

/// Rewrites parameters by name: `f(name, value)` returns the new value (flattened), or `None`
/// to keep the old one. Gradient tracking is kept as it was.
pub struct MapByName<F: FnMut(&str, Tensor<1>) -> Option<Tensor<1>>> {
    path: PathStack,
    f: F,
}

impl<F: FnMut(&str, Tensor<1>) -> Option<Tensor<1>>> MapByName<F> {
    pub fn new(f: F) -> Self {
        MapByName {
            path: PathStack::default(),
            f,
        }
    }
}

impl<F: FnMut(&str, Tensor<1>) -> Option<Tensor<1>>> ModuleMapper for MapByName<F> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.0.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.0.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let tracked = tensor.is_require_grad();
        let autodiff = tensor.is_autodiff();
        let flat = tensor.clone().inner().reshape([shape.num_elements()]);
        let tensor = match (self.f)(&self.path.name(), flat) {
            Some(new) => {
                let mut t: Tensor<D> = new.reshape(shape);
                if autodiff {
                    t = t.autodiff();
                }
                if tracked {
                    t = t.require_grad();
                }
                t
            }
            None => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Replaces every parameter of `model` with the tensor of the same name in `tensors`; every
/// parameter must be present with its shape (`origin` names the file in errors).
pub fn load(
    model: Transformer,
    tensors: &BTreeMap<String, HostTensor>,
    origin: &str,
) -> Result<Transformer> {
    let expected = collect_shapes(&model);
    for (name, shape) in &expected {
        match tensors.get(name) {
            None => {
                return Err(TrainError::Checkpoint(format!(
                    "{origin}: tensor {name} is missing"
                )));
            }
            Some(t) if &t.shape != shape || t.data.len() != shape.iter().product::<usize>() => {
                return Err(TrainError::Checkpoint(format!(
                    "{origin}: tensor {name} has shape {:?}, the model needs {shape:?}",
                    t.shape
                )));
            }
            Some(_) => {}
        }
    }
    let mut m = MapByName::new(|name: &str, old: Tensor<1>| {
        let t = &tensors[name];
        Some(Tensor::<1>::from_data(
            TensorData::new(t.data.clone(), [t.data.len()]),
            &old.device(),
        ))
    });
    Ok(model.map(&mut m))
}

/// Like [`load`], but a parameter missing from `tensors` keeps its value (e.g. SubLN gains a
/// teacher does not have); every tensor given must fit the model.
pub fn load_some(
    model: Transformer,
    tensors: &BTreeMap<String, HostTensor>,
    origin: &str,
) -> Result<Transformer> {
    let expected: BTreeMap<String, Vec<usize>> = collect_shapes(&model).into_iter().collect();
    for (name, t) in tensors {
        match expected.get(name) {
            None => {
                return Err(TrainError::Checkpoint(format!(
                    "{origin}: tensor {name} is not a parameter of the model"
                )));
            }
            Some(shape) if &t.shape != shape || t.data.len() != shape.iter().product::<usize>() => {
                return Err(TrainError::Checkpoint(format!(
                    "{origin}: tensor {name} has shape {:?}, the model needs {shape:?}",
                    t.shape
                )));
            }
            Some(_) => {}
        }
    }
    let mut m = MapByName::new(|name: &str, old: Tensor<1>| {
        let t = tensors.get(name)?;
        Some(Tensor::<1>::from_data(
            TensorData::new(t.data.clone(), [t.data.len()]),
            &old.device(),
        ))
    });
    Ok(model.map(&mut m))
}

/// Names and shapes of every parameter.
pub fn collect_shapes(model: &Transformer) -> Vec<(String, Vec<usize>)> {
    struct Shapes {
        path: PathStack,
        out: Vec<(String, Vec<usize>)>,
    }
    impl ModuleVisitor for Shapes {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.0.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out
                .push((self.path.name(), param.lazy_shape().to_vec()));
        }
    }
    let mut v = Shapes {
        path: PathStack::default(),
        out: Vec::new(),
    };
    model.visit(&mut v);
    v.out
}
