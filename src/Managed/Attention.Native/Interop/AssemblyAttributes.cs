using System.Runtime.CompilerServices;

// Every native signature is blittable (pointers, handles, enums, CUdeviceptr); no runtime marshalling is needed,
// and disabling it turns an accidental non-blittable signature into a compile error of the source generator.
[assembly: DisableRuntimeMarshalling]
