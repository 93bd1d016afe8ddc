// Analysis regions for llvm-mca (bench/phone_model.py): compiled with -DDLM_MCA, a kernel's
// steady-state step is bracketed by LLVM-MCA-BEGIN/END comments in its assembly, named
// "<name><F>.r<R>.k<K>.e<E>" (F tells the format: 16 for fp16, 34 for q8_0's and 18 for q4_0's block
// bytes): the step covers K keys and E elements of each (cycles per key and kv head = cycles of the
// step × head_dim / E / K) for R query rows. Empty in every real build.
#pragma once

#if defined(DLM_MCA)
#define DLM_MCA_BEGIN(name, F, R, K, E) \
  __asm__ volatile("# LLVM-MCA-BEGIN " name "%c3.r%c0.k%c1.e%c2" ::"i"(R), "i"(K), "i"(E), "i"(F))
#define DLM_MCA_END() __asm__ volatile("# LLVM-MCA-END")
#else
#define DLM_MCA_BEGIN(name, F, R, K, E) ((void)0)
#define DLM_MCA_END() ((void)0)
#endif
