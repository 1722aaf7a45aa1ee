#include <stdio.h>
#include <time.h>
#include <x86intrin.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
float vals[4096] __attribute__((aligned(64)));
int main(){
  for(int i=0;i<4096;i++) vals[i]=1e-6f*i;
  long iters=20000000;
  for (int mode=0; mode<3; ++mode){
  double t0=now(); unsigned long long c0=__rdtsc();
  for(long it=0;it<iters;++it){
    if(mode==0) __asm__ volatile(
      ".irp r,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n vfmadd231ps 4*\\r(%0)%{1to16%}, %%zmm28, %%zmm\\r\n .endr\n"
      :: "r"(vals) : "memory");
    else if(mode==1) __asm__ volatile(
      ".irp r,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n vfmadd231ps %%zmm29, %%zmm28, %%zmm\\r\n .endr\n"
      :: "r"(vals) : "memory");
    else __asm__ volatile(
      ".irp r,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n vfmadd231ps 1000*\\r(%0)%{1to16%}, %%zmm28, %%zmm\\r\n .endr\n"
      :: "r"(vals) : "memory");
  }
  double t=now()-t0; unsigned long long c=__rdtsc()-c0;
  printf("mode %d: %.3f ns/fma, %.2f tsc/fma\n", mode, t/(iters*16.0)*1e9, (double)c/(iters*16.0));
  }
}
