// Probe (stop 56): throughput of 512-bit loads, FMAs, and FMAs fed by loads, one core.
// g++ -O2 -mavx512f fma_load_throughput.cpp -o probe && ./probe
#include <cstdio>
#include <chrono>
#include <cstdlib>
alignas(64) float buf[4096];
int main(){ long n=100000000; const float* p=buf;
 auto T=[&](auto f,const char* nm,int per){auto t=std::chrono::steady_clock::now(); f(); double d=std::chrono::duration<double>(std::chrono::steady_clock::now()-t).count(); printf("%-28s %.2f G/s\n",nm,n*per/d/1e9);};
 T([&]{__asm__ volatile("mov %0,%%rcx\n1:\n"
 "vmovups (%1),%%zmm0\n vmovups 64(%1),%%zmm1\n vmovups 128(%1),%%zmm2\n vmovups 192(%1),%%zmm3\n vmovups 256(%1),%%zmm4\n vmovups 320(%1),%%zmm5\n vmovups 384(%1),%%zmm6\n vmovups 448(%1),%%zmm7\n"
 "dec %%rcx\n jnz 1b\n"::"r"(n),"r"(p):"rcx","xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7");},"zmm loads",8);
 T([&]{__asm__ volatile("mov %0,%%rcx\n1:\n"
 "vfmadd231ps (%1),%%zmm8,%%zmm0\n vfmadd231ps 64(%1),%%zmm8,%%zmm1\n vfmadd231ps 128(%1),%%zmm8,%%zmm2\n vfmadd231ps 192(%1),%%zmm8,%%zmm3\n vfmadd231ps 256(%1),%%zmm8,%%zmm4\n vfmadd231ps 320(%1),%%zmm8,%%zmm5\n vfmadd231ps 384(%1),%%zmm8,%%zmm6\n vfmadd231ps 448(%1),%%zmm8,%%zmm7\n"
 "vfmadd231ps 512(%1),%%zmm8,%%zmm9\n vfmadd231ps 576(%1),%%zmm8,%%zmm10\n"
 "dec %%rcx\n jnz 1b\n"::"r"(n),"r"(p):"rcx","xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm9","xmm10");},"fma+mem operand",10);
 T([&]{__asm__ volatile("mov %0,%%rcx\n1:\n"
 "vmovups (%1),%%ymm0\n vmovups 64(%1),%%ymm1\n vmovups 128(%1),%%ymm2\n vmovups 192(%1),%%ymm3\n vmovups 256(%1),%%ymm4\n vmovups 320(%1),%%ymm5\n vmovups 384(%1),%%ymm6\n vmovups 448(%1),%%ymm7\n"
 "dec %%rcx\n jnz 1b\n"::"r"(n),"r"(p):"rcx","xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7");},"ymm loads",8);
 T([&]{__asm__ volatile("mov %0,%%rcx\n1:\n"
 "mov (%1),%%rax\n mov 8(%1),%%rdx\n mov 16(%1),%%rsi\n mov 24(%1),%%rdi\n mov 32(%1),%%r8\n mov 40(%1),%%r9\n mov 48(%1),%%r10\n mov 56(%1),%%r11\n"
 "dec %%rcx\n jnz 1b\n"::"r"(n),"r"(p):"rcx","rax","rdx","rsi","rdi","r8","r9","r10","r11");},"gpr loads",8);
 T([&]{__asm__ volatile("mov %0,%%rcx\n1:\n"
 "vmovups (%1),%%zmm11\n vfmadd231ps %%zmm11,%%zmm8,%%zmm0\n vmovups 64(%1),%%zmm12\n vfmadd231ps %%zmm12,%%zmm8,%%zmm1\n vmovups 128(%1),%%zmm13\n vfmadd231ps %%zmm13,%%zmm8,%%zmm2\n vmovups 192(%1),%%zmm14\n vfmadd231ps %%zmm14,%%zmm8,%%zmm3\n"
 "vmovups 256(%1),%%zmm15\n vfmadd231ps %%zmm15,%%zmm8,%%zmm4\n vmovups 320(%1),%%zmm16\n vfmadd231ps %%zmm16,%%zmm8,%%zmm5\n vmovups 384(%1),%%zmm17\n vfmadd231ps %%zmm17,%%zmm8,%%zmm6\n vmovups 448(%1),%%zmm18\n vfmadd231ps %%zmm18,%%zmm8,%%zmm7\n"
 "vmovups 512(%1),%%zmm19\n vfmadd231ps %%zmm19,%%zmm8,%%zmm9\n vmovups 576(%1),%%zmm20\n vfmadd231ps %%zmm20,%%zmm8,%%zmm10\n"
 "dec %%rcx\n jnz 1b\n"::"r"(n),"r"(p):"rcx","xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm9","xmm10","xmm11","xmm12","xmm13","xmm14","xmm15","xmm16","xmm17","xmm18","xmm19","xmm20");},"load then fma",10);
 T([&]{__asm__ volatile("mov %0,%%rcx\n1:\n"
 "vfmadd231ps (%1),%%ymm8,%%ymm0\n vfmadd231ps 64(%1),%%ymm8,%%ymm1\n vfmadd231ps 128(%1),%%ymm8,%%ymm2\n vfmadd231ps 192(%1),%%ymm8,%%ymm3\n vfmadd231ps 256(%1),%%ymm8,%%ymm4\n vfmadd231ps 320(%1),%%ymm8,%%ymm5\n vfmadd231ps 384(%1),%%ymm8,%%ymm6\n vfmadd231ps 448(%1),%%ymm8,%%ymm7\n"
 "vfmadd231ps 512(%1),%%ymm8,%%ymm9\n vfmadd231ps 576(%1),%%ymm8,%%ymm10\n"
 "dec %%rcx\n jnz 1b\n"::"r"(n),"r"(p):"rcx","xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm9","xmm10");},"ymm fma+mem operand",10);
 T([&]{__asm__ volatile("mov %0,%%rcx\n1:\n"
 "vmovups (%1),%%zmm11\n vfmadd231ps %%zmm11,%%zmm8,%%zmm0\n vfmadd231ps %%zmm11,%%zmm9,%%zmm1\n vmovups 64(%1),%%zmm12\n vfmadd231ps %%zmm12,%%zmm8,%%zmm2\n vfmadd231ps %%zmm12,%%zmm9,%%zmm3\n"
 "vmovups 128(%1),%%zmm13\n vfmadd231ps %%zmm13,%%zmm8,%%zmm4\n vfmadd231ps %%zmm13,%%zmm9,%%zmm5\n vmovups 192(%1),%%zmm14\n vfmadd231ps %%zmm14,%%zmm8,%%zmm6\n vfmadd231ps %%zmm14,%%zmm9,%%zmm7\n"
 "vmovups 256(%1),%%zmm15\n vfmadd231ps %%zmm15,%%zmm8,%%zmm16\n vfmadd231ps %%zmm15,%%zmm9,%%zmm17\n"
 "dec %%rcx\n jnz 1b\n"::"r"(n),"r"(p):"rcx","xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm11","xmm12","xmm13","xmm14","xmm15","xmm16","xmm17");},"1 zmm load per 2 fma (fma/s)",10);
}
