using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(Attention.Native.Bench.CpuOpBenchmarks).Assembly).Run(args);
