using Attention.Native.Runtime;

namespace Attention.Native.Ops;

/// <summary>Every kernel program of the library; the <c>Kernels</c> tests compile each one for sm_80 and sm_90.</summary>
/// <remarks>Thread safety: immutable; safe from any thread.</remarks>
public static class KernelCatalog
{
    /// <summary>All programs, one per kernel file in <c>cuda/</c>.</summary>
    public static IReadOnlyList<KernelProgram> All { get; } =
    [
        LinearCuda.Program,
        RopeCuda.Program,
        RmsNormCuda.Program,
        SoftmaxAttentionCuda.Program,
        SoftmaxAttentionTensorCoreCuda.Program,
        SoftmaxAttentionDecodeCuda.Program,
        PointwiseCuda.Program,
        ColumnsCuda.Program,
        LrpeCuda.Program,
        FocusingMapCuda.Program,
        DepthwiseConvCuda.Program,
        AdaptivePoolCuda.Program,
        GridResizeCuda.Program,
        PermuteCuda.Program,
        HeadConvCuda.Program,
        TpaContractionCuda.Program,
        LightningCuda.Program,
        LightningCuda.TensorCoreProgram,
        FocusedLinearAttentionCuda.Program,
        LatentAttentionCuda.Program,
        LatentAttentionCuda.TensorCoreProgram,
        TpaDecodeCuda.Program,
        PagedAttentionCuda.Program,
    ];
}
