// Minimal declarations of pthreadpool's C API: the executorch wheel ships threadpool.h, which
// includes <pthreadpool.h>, but not that header. We only call ThreadPool methods through a
// pointer, so the opaque type and the destroy function are all its class needs.
#pragma once
#ifdef __cplusplus
extern "C" {
#endif
typedef struct pthreadpool* pthreadpool_t;
void pthreadpool_destroy(pthreadpool_t threadpool);
#ifdef __cplusplus
}
#endif
