using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;
using Tasks = System.Threading.Tasks;

namespace Attention.Native.Ops;

/// <summary>
/// General matrix multiply on the CPU, <c>C = alpha · op(A) · op(B) + beta · C</c>, row-major, for float and double.
/// </summary>
/// <remarks>
/// The classic packed-panel design: B is copied in blocks of <see cref="DepthBlock"/> × <see cref="ColumnBlock"/>
/// (kept in the last-level cache) and A in blocks of <see cref="RowBlock"/> × <see cref="DepthBlock"/> (kept in L2),
/// both laid out as the register kernel reads them, so transposes cost nothing after packing and every load in
/// the kernel is sequential. The kernel holds a <see cref="KernelRows"/> × (2 vectors) tile of C in registers
/// across the whole depth block, using the widest accelerated vectors (512, 256 bits, else <see cref="Vector{T}"/>)
/// with fused multiply-add. Two other paths, chosen from the shape alone: a plain loop for tiny products, and
/// <see cref="FewRows"/> when op(A) has so few rows (decoding one token at a time) that packing B would cost more
/// than the product. Each element of C is summed over k in an order fixed by the shape, whatever the partition of C
/// among threads, so <see cref="Serial"/> and <see cref="Parallel"/> give bitwise identical, deterministic results.
/// As in BLAS, alpha == 0 or k == 0 only scales C by beta (A and B are not read).
/// </remarks>
internal static unsafe class CpuGemm
{
    /// <summary>Rows of the register tile: 6 rows × 2 vectors = 12 accumulators, which fit 16 AVX2 registers with the operands.</summary>
    internal const int KernelRows = 6;

    /// <summary>Depth of a packed block: a kernel's B panel (depth × 2 vectors) then stays in L1.</summary>
    internal const int DepthBlock = 256;

    /// <summary>Most rows of a packed A block (a multiple of <see cref="KernelRows"/>): the block stays in L2.</summary>
    internal const int RowBlock = 144;

    /// <summary>Most columns of a packed B block (a multiple of every panel width).</summary>
    internal const int ColumnBlock = 4096;

    /// <summary>Below this many multiply-adds, packing costs more than it saves: a plain loop is used.</summary>
    internal const long SmallWork = 32 * 1024;

    /// <summary>Below this many multiply-adds, one thread beats the cost of starting parallel work.</summary>
    private const long ParallelWork = 1 << 19;

    private const int Alignment = 64;

    /// <summary>
    /// Up to this many rows of op(A), <see cref="FewRows"/> beats packing B: measured crossovers, B stored [n, k]
    /// (dot products, the Linear forward) and B stored [k, n] (row updates).
    /// </summary>
    internal const int FewRowsLimitTransposedB = 24;

    /// <inheritdoc cref="FewRowsLimitTransposedB"/>
    internal const int FewRowsLimitPlainB = 4;

    /// <summary>Columns of C per strip in <see cref="FewRows"/>: a few rows of it stay in L1 across the whole depth.</summary>
    private const int StripColumns = 2048;

    /// <summary>
    /// C = alpha · op(A) · op(B) + beta · C, row-major. op(A) is [m, k]: A is stored [m, k] with row stride lda,
    /// or when transA it is stored [k, m] (row stride lda). op(B) is [k, n]: B stored [k, n] (ldb), or when transB stored [n, k].
    /// C is [m, n] with row stride ldc. beta == 0 means C is overwritten (its old contents, even NaN, ignored).
    /// Single-threaded: for callers that already parallelise over independent blocks.
    /// </summary>
    public static void Serial<T>(bool transA, bool transB, int m, int n, int k, T alpha, ReadOnlySpan<T> a, int lda, ReadOnlySpan<T> b, int ldb, T beta, Span<T> c, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Validate<T>(transA, transB, m, n, k, a.Length, lda, b.Length, ldb, c.Length, ldc);
        fixed (T* pa = a, pb = b, pc = c)
        {
            Run(parallel: false, transA, transB, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc);
        }
    }

    /// <summary>
    /// Same contract as <see cref="Serial"/>, multi-threaded over tiles of C (deterministic: each C element computed
    /// by one task in a fixed order, and bitwise equal to the <see cref="Serial"/> result).
    /// </summary>
    public static void Parallel<T>(bool transA, bool transB, int m, int n, int k, T alpha, PinnedBuffer<T> a, int lda, PinnedBuffer<T> b, int ldb, T beta, PinnedBuffer<T> c, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Validate<T>(transA, transB, m, n, k, a.Length, lda, b.Length, ldb, c.Length, ldc);
        Run(parallel: true, transA, transB, m, n, k, alpha, Address(a), lda, Address(b), ldb, beta, Address(c), ldc);
    }

    private static T* Address<T>(PinnedBuffer<T> buffer)
        where T : unmanaged =>
        buffer.IsEmpty ? null : (T*)Unsafe.AsPointer(ref buffer[0]);

    private static void Validate<T>(bool transA, bool transB, int m, int n, int k, long aLength, int lda, long bLength, int ldb, long cLength, int ldc)
    {
        if (typeof(T) != typeof(float) && typeof(T) != typeof(double))
        {
            throw new NotSupportedException($"CpuGemm computes in float or double, not {typeof(T).Name}");
        }
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        CheckMatrix("a", "lda", transA ? k : m, transA ? m : k, aLength, lda);
        CheckMatrix("b", "ldb", transB ? n : k, transB ? k : n, bLength, ldb);
        CheckMatrix("c", "ldc", m, n, cLength, ldc);
    }

    private static void CheckMatrix(string name, string strideName, int rows, int columns, long length, int stride)
    {
        if (stride < columns || stride < 0)
        {
            throw new ArgumentException($"{strideName}: expected at least {columns} (the stored row length of {name}), actual {stride}", strideName);
        }
        long needed = rows == 0 || columns == 0 ? 0 : ((long)(rows - 1) * stride) + columns;
        if (length < needed)
        {
            throw new ArgumentException($"{name}: expected at least {needed} elements for [{rows}, {columns}] with row stride {stride}, actual {length}", name);
        }
    }

    private static void Run<T>(bool parallel, bool transA, bool transB, int m, int n, int k, T alpha, T* a, int lda, T* b, int ldb, T beta, T* c, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (m == 0 || n == 0)
        {
            return;
        }
        if (k == 0 || alpha == T.Zero)
        {
            ScaleC(m, n, beta, c, ldc);
            return;
        }
        long work = (long)m * n * k;
        if (work < SmallWork)
        {
            Plain(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            return;
        }
        parallel &= work >= ParallelWork && Environment.ProcessorCount > 1;
        if (m <= (transB ? FewRowsLimitTransposedB : FewRowsLimitPlainB))
        {
            FewRows(parallel, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            return;
        }
        // The vector-width checks are JIT-time constants: only one instantiation is ever compiled.
        if (Vector512.IsHardwareAccelerated)
        {
            Blocked<T, Vector512<T>, Simd512<T>>(parallel, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Blocked<T, Vector256<T>, Simd256<T>>(parallel, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        }
        else
        {
            Blocked<T, Vector<T>, SimdVector<T>>(parallel, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        }
    }

    /// <summary>C = beta · C, where beta == 0 clears C even if it held NaN.</summary>
    private static void ScaleC<T>(int m, int n, T beta, T* c, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int i = 0; i < m; i++)
        {
            var row = new Span<T>(c + ((long)i * ldc), n);
            if (beta == T.Zero)
            {
                row.Clear();
            }
            else if (beta != T.One)
            {
                TensorPrimitives.Multiply(row, beta, row);
            }
        }
    }

    /// <summary>Direct triple loop for products too small to repay packing.</summary>
    private static void Plain<T>(bool transA, bool transB, int m, int n, int k, T alpha, T* a, int lda, T* b, int ldb, T beta, T* c, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        // Element strides of op(A) along i and p, and of op(B) along p and j.
        long aRow = transA ? 1 : lda, aDepth = transA ? lda : 1;
        long bDepth = transB ? 1 : ldb, bColumn = transB ? ldb : 1;
        for (int i = 0; i < m; i++)
        {
            T* cRow = c + ((long)i * ldc);
            for (int j = 0; j < n; j++)
            {
                T sum = T.Zero;
                T* ai = a + (i * aRow);
                T* bj = b + (j * bColumn);
                for (int p = 0; p < k; p++)
                {
                    sum += ai[p * aDepth] * bj[p * bDepth];
                }
                cRow[j] = beta == T.Zero ? alpha * sum : (alpha * sum) + (beta * cRow[j]);
            }
        }
    }

    /// <summary>
    /// op(A) with only a few rows (token-by-token decoding): packing B would cost more than the whole product, so
    /// B is streamed once from where it lies, against a contiguous copy of alpha · op(A). Transposed B: one dot
    /// product per element, over a row of B. Plain B: each row of B updates a strip of C's rows, which stays in L1.
    /// </summary>
    private static void FewRows<T>(bool parallel, bool transA, bool transB, int m, int n, int k, T alpha, T* a, int lda, T* b, int ldb, T beta, T* c, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T[] rowBuffer = Scratch<T>.Rent((long)m * k);
        try
        {
            T* rows = Scratch<T>.Aligned(rowBuffer);
            for (int i = 0; i < m; i++)
            {
                for (int p = 0; p < k; p++)
                {
                    rows[((long)i * k) + p] = alpha * (transA ? a[((long)p * lda) + i] : a[((long)i * lda) + p]);
                }
            }
            int chunks = CeilDiv(n, StripColumns);
            if (parallel)
            {
                chunks = Math.Max(chunks, Math.Min(n, 4 * Environment.ProcessorCount));
                Tasks.Parallel.For(0, chunks, chunk => FewRowsStrip<T>(transB, m, Share(n, chunks, chunk), Share(n, chunks, chunk + 1), k, rows, b, ldb, beta, c, ldc));
            }
            else
            {
                for (int chunk = 0; chunk < chunks; chunk++)
                {
                    FewRowsStrip<T>(transB, m, Share(n, chunks, chunk), Share(n, chunks, chunk + 1), k, rows, b, ldb, beta, c, ldc);
                }
            }
        }
        finally
        {
            Scratch<T>.Return(rowBuffer);
        }
    }

    /// <summary>Columns [j0, j1) of <see cref="FewRows"/>.</summary>
    private static void FewRowsStrip<T>(bool transB, int m, int j0, int j1, int k, T* rows, T* b, int ldb, T beta, T* c, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (transB)
        {
            for (int j = j0; j < j1; j++)
            {
                var column = new ReadOnlySpan<T>(b + ((long)j * ldb), k);
                for (int i = 0; i < m; i++)
                {
                    T dot = TensorPrimitives.Dot<T>(new ReadOnlySpan<T>(rows + ((long)i * k), k), column);
                    ref T target = ref c[((long)i * ldc) + j];
                    target = beta == T.Zero ? dot : dot + (beta * target);
                }
            }
            return;
        }
        int width = j1 - j0;
        for (int i = 0; i < m; i++)
        {
            var strip = new Span<T>(c + ((long)i * ldc) + j0, width);
            if (beta == T.Zero)
            {
                strip.Clear();
            }
            else if (beta != T.One)
            {
                TensorPrimitives.Multiply(strip, beta, strip);
            }
        }
        for (int p = 0; p < k; p++)
        {
            var rowOfB = new ReadOnlySpan<T>(b + ((long)p * ldb) + j0, width);
            for (int i = 0; i < m; i++)
            {
                var strip = new Span<T>(c + ((long)i * ldc) + j0, width);
                TensorPrimitives.MultiplyAdd(rowOfB, rows[((long)i * k) + p], strip, strip);
            }
        }
    }

    private static void Blocked<T, TVec, TSimd>(bool parallel, bool transA, bool transB, int m, int n, int k, T alpha, T* a, int lda, T* b, int ldb, T beta, T* c, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        int panelWidth = 2 * TSimd.Lanes;
        int maxColumns = RoundUp(Math.Min(n, ColumnBlock), panelWidth);
        T[] bBuffer = Scratch<T>.Rent((long)Math.Min(k, DepthBlock) * maxColumns);
        try
        {
            T* packedB = Scratch<T>.Aligned(bBuffer);
            for (int jc = 0; jc < n; jc += ColumnBlock)
            {
                int columns = Math.Min(ColumnBlock, n - jc);
                int columnPanels = CeilDiv(columns, panelWidth);
                for (int pc = 0; pc < k; pc += DepthBlock)
                {
                    int depth = Math.Min(DepthBlock, k - pc);
                    // The first depth block applies beta; later ones add to what it left.
                    var step = new Step<T>(pc == 0 ? beta : T.One, pc == 0 && beta == T.Zero);
                    T* cBlock = c + jc;
                    if (parallel)
                    {
                        PackBParallel<T>(transB, b, ldb, pc, depth, jc, columns, panelWidth, packedB);
                        MultiplyParallel<T, TVec, TSimd>(transA, m, depth, columnPanels, columns, alpha, a, lda, pc, packedB, cBlock, ldc, step);
                    }
                    else
                    {
                        PackB(transB, b, ldb, pc, depth, jc, 0, columns, panelWidth, packedB);
                        MultiplyRows<T, TVec, TSimd>(transA, 0, m, depth, 0, columns, alpha, a, lda, pc, packedB, cBlock, ldc, step);
                    }
                }
            }
        }
        finally
        {
            Scratch<T>.Return(bBuffer);
        }
    }

    /// <summary>Packs B for one block, its column panels shared out among threads.</summary>
    private static void PackBParallel<T>(bool transB, T* b, int ldb, int pc, int depth, int jc, int columns, int panelWidth, T* packedB)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int panels = CeilDiv(columns, panelWidth);
        int chunks = Math.Min(panels, 2 * Environment.ProcessorCount);
        Tasks.Parallel.For(0, chunks, chunk =>
        {
            int first = Share(panels, chunks, chunk) * panelWidth, last = Math.Min(columns, Share(panels, chunks, chunk + 1) * panelWidth);
            PackB(transB, b, ldb, pc, depth, jc, first, last, panelWidth, packedB);
        });
    }

    /// <summary>
    /// One depth block of C += op(A) · packed B in parallel: tasks own disjoint tiles of C (row ranges, split into
    /// column ranges only when there are too few rows to keep every core busy), each packing its own A block.
    /// </summary>
    private static void MultiplyParallel<T, TVec, TSimd>(bool transA, int m, int depth, int columnPanels, int columns, T alpha, T* a, int lda, int pc, T* packedB, T* c, int ldc, Step<T> step)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        int workers = Environment.ProcessorCount;
        int rowPanels = CeilDiv(m, KernelRows);
        // Enough row blocks to fit L2, rounded up to a multiple of the worker count, panels shared out evenly.
        int rowBlocks = Math.Min(rowPanels, RoundUp(CeilDiv(m, RowBlock), workers));
        int columnChunks = Math.Min(columnPanels, Math.Max(1, CeilDiv(workers, rowBlocks)));
        int panelWidth = 2 * TSimd.Lanes;
        Tasks.Parallel.For(0, rowBlocks * columnChunks, task =>
        {
            int rowBlock = task / columnChunks, chunk = task % columnChunks;
            int i0 = Share(rowPanels, rowBlocks, rowBlock) * KernelRows;
            int i1 = Math.Min(m, Share(rowPanels, rowBlocks, rowBlock + 1) * KernelRows);
            int j0 = Share(columnPanels, columnChunks, chunk) * panelWidth;
            int j1 = Math.Min(columns, Share(columnPanels, columnChunks, chunk + 1) * panelWidth);
            MultiplyRows<T, TVec, TSimd>(transA, i0, i1, depth, j0, j1, alpha, a, lda, pc, packedB, c, ldc, step);
        });
    }

    /// <summary>Rows [i0, i1) × columns [j0, j1) of one depth block, A packed here block by block.</summary>
    private static void MultiplyRows<T, TVec, TSimd>(bool transA, int i0, int i1, int depth, int j0, int j1, T alpha, T* a, int lda, int pc, T* packedB, T* c, int ldc, Step<T> step)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        T[] aBuffer = Scratch<T>.Rent((long)RowBlock * depth);
        try
        {
            T* packedA = Scratch<T>.Aligned(aBuffer);
            for (int ic = i0; ic < i1; ic += RowBlock)
            {
                int rows = Math.Min(RowBlock, i1 - ic);
                PackA(transA, a, lda, ic, rows, pc, depth, alpha, packedA);
                MacroKernel<T, TVec, TSimd>(rows, j0, j1, depth, packedA, packedB, c + ((long)ic * ldc), ldc, step);
            }
        }
        finally
        {
            Scratch<T>.Return(aBuffer);
        }
    }

    /// <summary>
    /// Packs alpha · op(A)[i0 .. i0+rows, p0 .. p0+depth] as panels of <see cref="KernelRows"/> rows, each stored
    /// depth-major (the kernel reads the panel's rows at one depth together); rows past the end are zero.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackA<T>(bool transA, T* a, int lda, int i0, int rows, int p0, int depth, T alpha, T* packed)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (transA)
        {
            // Stored [k, m]: one row of the stored matrix holds every panel's rows at one depth; read it in order.
            for (int p = 0; p < depth; p++)
            {
                T* source = a + ((long)(p0 + p) * lda) + i0;
                for (int ir = 0; ir < rows; ir += KernelRows)
                {
                    int panelRows = Math.Min(KernelRows, rows - ir);
                    T* target = packed + ((long)ir * depth) + (p * KernelRows);
                    T* piece = source + ir;
                    if (panelRows == KernelRows)
                    {
                        target[0] = alpha * piece[0];
                        target[1] = alpha * piece[1];
                        target[2] = alpha * piece[2];
                        target[3] = alpha * piece[3];
                        target[4] = alpha * piece[4];
                        target[5] = alpha * piece[5];
                        continue;
                    }
                    for (int r = 0; r < KernelRows; r++)
                    {
                        target[r] = r < panelRows ? alpha * piece[r] : T.Zero;
                    }
                }
            }
            return;
        }
        for (int ir = 0; ir < rows; ir += KernelRows)
        {
            int panelRows = Math.Min(KernelRows, rows - ir);
            T* panel = packed + ((long)ir * depth);
            if (panelRows == KernelRows)
            {
                // Stored [m, k]: read the six rows side by side, write the panel sequentially.
                T* row = a + ((long)(i0 + ir) * lda) + p0;
                T* r0 = row, r1 = r0 + lda, r2 = r1 + lda, r3 = r2 + lda, r4 = r3 + lda, r5 = r4 + lda;
                for (int p = 0; p < depth; p++)
                {
                    T* target = panel + (p * KernelRows);
                    target[0] = alpha * r0[p];
                    target[1] = alpha * r1[p];
                    target[2] = alpha * r2[p];
                    target[3] = alpha * r3[p];
                    target[4] = alpha * r4[p];
                    target[5] = alpha * r5[p];
                }
            }
            else
            {
                for (int r = 0; r < KernelRows; r++)
                {
                    T* source = a + ((long)(i0 + ir + r) * lda) + p0;
                    for (int p = 0; p < depth; p++)
                    {
                        panel[(p * KernelRows) + r] = r < panelRows ? alpha * source[p] : T.Zero;
                    }
                }
            }
        }
    }

    /// <summary>
    /// Packs columns [first, last) of op(B)[p0 .. p0+depth, jc ..] into panels of <paramref name="panelWidth"/>
    /// columns, each stored depth-major; columns past the end are zero. <paramref name="first"/> is panel-aligned.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackB<T>(bool transB, T* b, int ldb, int p0, int depth, int jc, int first, int last, int panelWidth, T* packed)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int jr = first; jr < last; jr += panelWidth)
        {
            int panelColumns = Math.Min(panelWidth, last - jr);
            T* panel = packed + ((long)jr * depth);
            if (!transB)
            {
                // Stored [k, n]: each depth's slice of the panel is a contiguous piece of a row.
                for (int p = 0; p < depth; p++)
                {
                    var source = new ReadOnlySpan<T>(b + ((long)(p0 + p) * ldb) + jc + jr, panelColumns);
                    var target = new Span<T>(panel + ((long)p * panelWidth), panelWidth);
                    source.CopyTo(target);
                    target[panelColumns..].Clear();
                }
            }
            else
            {
                // Stored [n, k]: read four of B's rows side by side, so each depth writes four adjacent elements.
                int j = 0;
                for (; j + 4 <= panelColumns; j += 4)
                {
                    T* s0 = b + ((long)(jc + jr + j) * ldb) + p0, s1 = s0 + ldb, s2 = s1 + ldb, s3 = s2 + ldb;
                    T* target = panel + j;
                    for (int p = 0; p < depth; p++, target += panelWidth)
                    {
                        target[0] = s0[p];
                        target[1] = s1[p];
                        target[2] = s2[p];
                        target[3] = s3[p];
                    }
                }
                for (; j < panelWidth; j++)
                {
                    T* target = panel + j;
                    T* source = j < panelColumns ? b + ((long)(jc + jr + j) * ldb) + p0 : null;
                    for (int p = 0; p < depth; p++)
                    {
                        target[p * panelWidth] = source is null ? T.Zero : source[p];
                    }
                }
            }
        }
    }

    /// <summary>C[0 .. rows, j0 .. j1) (+)= packed A · packed B for one depth block, one register tile at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MacroKernel<T, TVec, TSimd>(int rows, int j0, int j1, int depth, T* packedA, T* packedB, T* c, int ldc, Step<T> step)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        int panelWidth = 2 * TSimd.Lanes;
        // Partial tiles at the edges are computed whole into this scratch tile, then the valid part merged.
        T* edge = stackalloc T[KernelRows * 2 * TSimd.Lanes];
        // Column panels outside: one B panel stays in L1 while the A panels stream past it from L2.
        for (int jr = j0; jr < j1; jr += panelWidth)
        {
            int columns = Math.Min(panelWidth, j1 - jr);
            T* bPanel = packedB + ((long)jr * depth);
            for (int ir = 0; ir < rows; ir += KernelRows)
            {
                int tileRows = Math.Min(KernelRows, rows - ir);
                T* aPanel = packedA + ((long)ir * depth);
                T* cTile = c + ((long)ir * ldc) + jr;
                if (tileRows == KernelRows && columns == panelWidth)
                {
                    Kernel<T, TVec, TSimd>(depth, aPanel, bPanel, cTile, ldc, step);
                }
                else
                {
                    Kernel<T, TVec, TSimd>(depth, aPanel, bPanel, edge, panelWidth, new Step<T>(T.Zero, true));
                    MergeEdge<T, TVec, TSimd>(edge, panelWidth, cTile, ldc, tileRows, columns, step);
                }
            }
        }
    }

    /// <summary>
    /// The register kernel: a <see cref="KernelRows"/> × (2 vectors) tile of C accumulated over the depth block in
    /// twelve vector registers, then written once.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel<T, TVec, TSimd>(int depth, T* a, T* b, T* c, int ldc, Step<T> step)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        int lanes = TSimd.Lanes;
        TVec c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        TVec c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        T* end = a + ((long)depth * KernelRows);
        while (a < end)
        {
            TVec b0 = TSimd.Load(b), b1 = TSimd.Load(b + lanes);
            TVec x = TSimd.Broadcast(a[0]);
            c00 = TSimd.MultiplyAdd(x, b0, c00);
            c01 = TSimd.MultiplyAdd(x, b1, c01);
            x = TSimd.Broadcast(a[1]);
            c10 = TSimd.MultiplyAdd(x, b0, c10);
            c11 = TSimd.MultiplyAdd(x, b1, c11);
            x = TSimd.Broadcast(a[2]);
            c20 = TSimd.MultiplyAdd(x, b0, c20);
            c21 = TSimd.MultiplyAdd(x, b1, c21);
            x = TSimd.Broadcast(a[3]);
            c30 = TSimd.MultiplyAdd(x, b0, c30);
            c31 = TSimd.MultiplyAdd(x, b1, c31);
            x = TSimd.Broadcast(a[4]);
            c40 = TSimd.MultiplyAdd(x, b0, c40);
            c41 = TSimd.MultiplyAdd(x, b1, c41);
            x = TSimd.Broadcast(a[5]);
            c50 = TSimd.MultiplyAdd(x, b0, c50);
            c51 = TSimd.MultiplyAdd(x, b1, c51);
            a += KernelRows;
            b += 2 * lanes;
        }
        StoreRow<T, TVec, TSimd>(c00, c01, c, step);
        StoreRow<T, TVec, TSimd>(c10, c11, c + ldc, step);
        StoreRow<T, TVec, TSimd>(c20, c21, c + (2L * ldc), step);
        StoreRow<T, TVec, TSimd>(c30, c31, c + (3L * ldc), step);
        StoreRow<T, TVec, TSimd>(c40, c41, c + (4L * ldc), step);
        StoreRow<T, TVec, TSimd>(c50, c51, c + (5L * ldc), step);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow<T, TVec, TSimd>(TVec sum0, TVec sum1, T* c, Step<T> step)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        T* c1 = c + TSimd.Lanes;
        if (step.Overwrite)
        {
            TSimd.Store(sum0, c);
            TSimd.Store(sum1, c1);
        }
        else if (step.Beta == T.One)
        {
            TSimd.Store(TSimd.Add(TSimd.Load(c), sum0), c);
            TSimd.Store(TSimd.Add(TSimd.Load(c1), sum1), c1);
        }
        else
        {
            TVec beta = TSimd.Broadcast(step.Beta);
            TSimd.Store(TSimd.MultiplyAdd(beta, TSimd.Load(c), sum0), c);
            TSimd.Store(TSimd.MultiplyAdd(beta, TSimd.Load(c1), sum1), c1);
        }
    }

    /// <summary>Merges the valid part of an edge tile into C with exactly the arithmetic of <see cref="StoreRow"/>.</summary>
    private static void MergeEdge<T, TVec, TSimd>(T* tile, int tileStride, T* c, int ldc, int rows, int columns, Step<T> step)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        for (int r = 0; r < rows; r++)
        {
            T* source = tile + (r * tileStride);
            T* target = c + ((long)r * ldc);
            for (int j = 0; j < columns; j++)
            {
                target[j] = step.Overwrite ? source[j]
                    : step.Beta == T.One ? target[j] + source[j]
                    : TSimd.IsFused ? T.FusedMultiplyAdd(step.Beta, target[j], source[j])
                    : (step.Beta * target[j]) + source[j];
            }
        }
    }

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;

    private static int RoundUp(int a, int multiple) => CeilDiv(a, multiple) * multiple;

    /// <summary>Start of part <paramref name="part"/> when <paramref name="total"/> items are shared out evenly among <paramref name="parts"/>.</summary>
    private static int Share(int total, int parts, int part) => (int)((long)total * part / parts);

    /// <summary>How one depth block's result is written: overwrite C, or C = beta · C + result.</summary>
    private readonly record struct Step<T>(T Beta, bool Overwrite);

    /// <summary>
    /// Pack buffers kept per thread (two: a caller's B block and the A block of a task it runs itself), pinned so
    /// they can be addressed and aligned once; repeated calls therefore allocate nothing. A buffer is taken out of
    /// its slot while in use, so a nested call on the same thread simply allocates its own.
    /// </summary>
    private static class Scratch<T>
        where T : unmanaged
    {
        [ThreadStatic]
        private static T[]? t_first;

        [ThreadStatic]
        private static T[]? t_second;

        public static T[] Rent(long length)
        {
            long needed = length + (Alignment / sizeof(T));
            T[]? first = t_first, second = t_second;
            bool firstFits = first is not null && first.LongLength >= needed;
            bool secondFits = second is not null && second.LongLength >= needed;
            // The smallest that fits, so a small request does not take the buffer a large one needs.
            if (firstFits && (!secondFits || first!.Length <= second!.Length))
            {
                t_first = null;
                return first!;
            }
            if (secondFits)
            {
                t_second = null;
                return second!;
            }
            return GC.AllocateUninitializedArray<T>(checked((int)needed), pinned: true);
        }

        public static void Return(T[] buffer)
        {
            // Keep the two largest arrays seen: the next call of the same size then finds what it needs.
            if (t_first is null)
            {
                t_first = buffer;
            }
            else if (t_second is null)
            {
                t_second = buffer;
            }
            else if (t_first.Length <= t_second.Length)
            {
                t_first = buffer.Length > t_first.Length ? buffer : t_first;
            }
            else
            {
                t_second = buffer.Length > t_second.Length ? buffer : t_second;
            }
        }

        /// <summary>The first 64-byte aligned element of a pinned buffer.</summary>
        public static T* Aligned(T[] buffer)
        {
            nuint address = (nuint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(buffer));
            return (T*)((address + (Alignment - 1)) & ~(nuint)(Alignment - 1));
        }
    }
}
