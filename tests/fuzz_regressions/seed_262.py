"""Fuzz reproducer: seed 262 (64-bit), minimized from 16 case(s) to 3.

Found by pvtranslate.fuzz: diverge (console, blame: native-vmm).
exit status native 1, pv 1; pv error: None; fullvirt agrees with pv
--- native
+++ pv
@@ -3,3 +3,3 @@
 c01 f=2d2 sp=0 h=51cb93b1 k=dbfe27f5 x=1
-c02 f=492 sp=0 h=e188c9ba k=e82adc3e
+c02 f=492 sp=0 h=e8a7e5e9 k=e82adc3e
 PASS

The guest ELF is embedded below (zlib, base64), so this file needs only pvtranslate and the VMM;
PROGRAM is the fuzz program that generated it (pvtranslate.fuzzgen.FuzzProgram.from_json(PROGRAM)
.build() rebuilds it while the generator is unchanged). Run ``python seed_262.py``: it exits with status 1
while the translation still differs from the original, 0 once it is fixed.

    # fuzz program: seed 262, 64-bit, 3 case(s)
    c00 mov.to.cr2 [from r10] plain: mov cr2, r10
      @SITE: mov cr2, r10
      @POST:
    c01 hlt [IF=1, the timer IRQ0 ends it] plain: hlt
      @SITE: hlt
      @POST:
    c02 rep.insb [COM1 scratch, DF=1] plain: rep insb byte ptr [rdi], dx
      @SITE: rep insb byte ptr [rdi], dx
      @POST:
          !mov r12, cr2
"""
from __future__ import annotations

import base64
import sys
import tempfile
import zlib
from pathlib import Path

SEED = 262
BITS = 64
VERDICT = 'diverge'
ASPECT = 'console'
BLAME = 'native-vmm'
XFAIL_REASON = None   # set when kept as a known bug: the file and the fix it needs
PROGRAM = {'bits': 64,
 'cases': [{'context': 'plain', 'draw_seed': 4044974597, 'entry': 'mov.to.cr2', 'pieces': [], 'variant': 1},
           {'context': 'plain', 'draw_seed': 1775508467, 'entry': 'hlt', 'pieces': [], 'variant': 0},
           {'context': 'plain',
            'draw_seed': 1145836322,
            'entry': 'rep.insb',
            'pieces': [{'after': ['!mov r12, cr2'],
                        'before': [],
                        'functions': [],
                        'kind': 'filler-after',
                        'tags': ['site-after', 'filler-site']}],
            'variant': 1}],
 'seed': 262}
GUEST_ELF = zlib.decompress(base64.b64decode(
    "eNrtnQtYFdXaxxdsBMQEvGYatlVUvEDcRcUcvDW7tFDUkEoHcYt4QYONadZxSq0INLvryWy62elikXoUBDfjIe+pZJr2nS5T"
    "3vZImabHSxT7W7PnPwrrKb/v+Z7n9HVq/Z9nz+99/7Ped82aPbP3Ri4uHD5yhL+fH7HkT24hRmYn4b5cgD+t/soQ6qWQALoN"
    "JkG+sYGGGX5lZ1OG/zKNumbEN9EvDujcgjRh4zrffLFWnb0pVdKUqAvA49fm64DMYgDh4uLi4uLi4uLi4uLi4uLi4uLi4uLi"
    "4uLi4uLi4uL6z5Hxfe5g+mhNH5nO/Cvf97dUpb5sJ2F+7UgihV1btNMe1lUrN76NHtb1SIVMiBoW39L4rnxYbJhdbUkr5LCu"
    "6iniF07bfvT7V7mx3GVHlqnLtGWeZbXijg+NBVfajeX6daJLqowS7EQsttHFV8aaYVmrE3b6UMrsJ7qURZ14pSyA0p/Sj9KP"
    "0kvpPfFKuUB7h5Ej5ZKPtRUuep7KjbMddyAs1p2aZieeWhshmLTcON8Vk/zDiecrwy0fG1A/qvrgzMViRacN64e4FwzvI26+"
    "88evlh+qDXlQrKw5OWLR+r7b4sUtd+eu6Bn/XernortTbIvSNa9+dbNYvaY++Q2P9OwZR3mN/5APPli/u5ujYvfSljuVh77d"
    "4tj8lN+D/7CX67sdlT1bfV2YUnR8m6Nq/vcffXVs/KgFji12d4NnXFLscw73W890zt0/Z8oyR/Vzj+0c/cSSXvvTyxYG+G14"
    "ZnVmWljXA+mjx2SMG39XWnra6LQxaRlpY9PGpY1Pu2uVuHRKZK1nx9WleR6ncZi91nPenxBPX5p4bmq0cOOHOiqybHThJ+j+"
    "soYTXcTye9OWHZ6zMuNHsWJs/8yPp30/Yq24ecl3f53Qf5RoFys3Hh48cmXVqSHiFnV5iK275/adovvC5oG3Prnix71idWjL"
    "xfemtel3yFFeO+SLzD71qbc6KrbscYYM/fu5vzs2D100pui1S5tGOirf7LxpbauOh1MdVTsnN5v9xbt91ju21PUd6m3ubNnD"
    "4e47+ujB7HWd4h3VH9Y/duidfZNurTdWTzYcWJ15/tpL/8j/6tKX0rjSTq+cEpvnX3SlnmhjjfQS8dx4dVS5v3EK5gXQU3CU"
    "jinL2uyl5+e0WF6/NHJA9ZSyJ8WKU8fFYf5v1gSJmxeX/nz5vOuJpWLlnjzvtwPmfC2JWx4XpOmFN+x4RXR7OtXaR91+YZRY"
    "veT7JYOiT1bZHeU7Hx5bObadfa+j4oFpb68PffauVY7NF6p+mPvqkqmio/KNbtU7Qu+Y/LmjKnlHr6nb5x7e6NhStq91yuFV"
    "EVUOd8Z7VVrmzuGtHNUVbTpkLHz0+Y3ijh3LRTuZSo9R3LGVHif52TwxT6/OPDczLcx+8Npn5z2/q2dntnFGOhmbUGMj0Y07"
    "2bgxNtG2ZeTE+bqGMRmVZBg9fW0eH9Ym2PuP4japIa7gh38kdOKCZh5j+ruzauiM492+YaE7fD8ftGh78OZLdOdP5/InZk3I"
    "rMkYLxbXFO/z7is+u/Vrf7H4iPiJZ5EWFrZRlulz43nB6/UuuVCkTbzbHOk2XhcWNfi52hef9e5qXFEU4N1Xd7z4LDUm3l33"
    "N3GJOn+vePFIelm0ZwxtkllXPf6JwMWqK8QzlKaid3vdmYk16e5WxqK+MQZ4XqTbmkpCpy22VQb7XlNapJfleNoYeyuMK8Fz"
    "hzGkLMRDDJYembroUrgrCK9VpWrjVC3VGqdaqadx6imtbZzWTvd/qcac0rg7CUFSYqPLcDXHk+LV3L2Mo02kk5cNNp6C0p3F"
    "wyKDS2vpNrz0CN12KFXp1l6q0W1UqYduY8Wlrshgcam7zPf6VkeufdSV4cYdETi12FYyInhq8VD/khHhFAElIzpQBJaMsFME"
    "l4yIoggRl86NrRR8JyqhUvRxoLjkgMsxxh1hHGhJAz3RJW0jxRJ/8/SFUcNtN3bNubJrSLCnq2FHGvYEGmVRL9wTSqM64iaG"
    "O5TG5jwlnejdeu5nOjzA2NHb2CHiTEX7LtwAwzKew5JOM/457+Eakm4nbrM2OU6tMF7S6Lz7xG5j91yaod7kVytuPWX3Bd6t"
    "iy6Hzf3GbZyBuF1hm9reccUOLDiT7m5uzFj+s3EtGO8VniE09FxPo3R3S2PXS1d39aRhTZzqJvR2rDDehT13U9tN5ljpSF8q"
    "EqSDfGks3bvCKI+hGywroVJdTdn/y4KQSqL4ornN3MZKK4y011mPsaKaJbtc9JZpby7Iu927q+67ml+52b0bIo1JfLc8vX4C"
    "In2XT7Dv8gn3XT4dfJeP3Xf5RInFJ8SSqsgjvpJnI42ryFNBl6dn0c10Mp3UvUC3fnVP0a1/XQnd2uqW0G2A/qDXN6CZXmgG"
    "gfp0MwjSs40gWM8y8+b6aCMI0W8z0EI37s/p1+mpBlrqSQZC9RhzbJje3QzC9RuNoJXezsxb69eZQRvdZgZt9R/ptTC9nX6u"
    "wZe310+ZwfX612bQQT9iBjfo+82go77dDDrpW8zgRn2DEUToaw101teY9k36S2bQRX/WDLrqJWbQTX/EDCL1+WbQXZ9jBj30"
    "XDPoqU80gyh9nBn00keaQW99qBn00QeYQV89zgyi9SgziNFvMoOb9fZmEKe3NIN4PcAMEvR68xlK1H8wgyRdN4NkXTODfvph"
    "M0jR95lBf32bGQzQq8xgoL7eDFL1t81gkP6KGdyirzCDwfqTNEjPoJ+87L73VK/t7kxx/zXfbv53197e2CsvXZ4h9fSyO/oj"
    "vbX41wdcXFx/XAWF2/lJ4OLi4uLi4uLi4uLi4uL6o3/9b+df/3NxcXFxcXFxcXFxcXFx/dH12BXaQQGUQBlUQBXUrHo/1IMC"
    "KIEyqIAqqIHEH/WgAEqgDCqgCmogsaEeFEAJlEEFVEENNP/UH60HBVACZVABVVADzT9jSOtBAZRAGVRAFdRA888Z0npQACVQ"
    "BhVQBTWQBKEeFEAJlEEFVEEN9P36h1EPCqAEyqACqqAGkuaoBwVQAmVQAVVQA0kI6kEBlEAZVEAV1EDSAvWgAEqgDCqgCmog"
    "uQ71oABKoAwqoApqIGmJelAAJVAGFVAFNZCEoh4UQAmUQQVUQQ0kYagHBVACZVABVVADzV/4ofWgAEqgDCqgCmogaYV6UAAl"
    "UAYVUAU10PerR0Y9KIASKIMKqIIaSNqgHhRACZRBBVRBDSRtUQ8KoATKoAKqoAaSdqgHBVACZVABVVADSXvUgwIogTKogCqo"
    "geR61IMCKIEyqIAqqIHmnzyl9aAASqAMKqAKaiC5AfWgAEqgDCqgCmog6Yh6UAAlUAYVUAU1kHRCPSiAEiiDCqiCGkhuRD0o"
    "gBIogwqoghpIIlAPCqAEyqACqqAGks6oBwVQAmVQAVVQA8lNqAcFUAJlUAFVUAPNN35aDwqgBMqgAqqgBpIuqAcFUAJlUAFV"
    "UANJV9SDAiiBMqiAKqiBpBvqQQGUQBlUQBXUQBKJelAAJVAGFVAFNZB0Rz0ogBIogwqoghpIeqAeFEAJlEEFVEENJD1RDwqg"
    "BMqgAqqgBpIo1IMCKIEyqIAqqIGkF+pBAZRAGVRAFdRA0hv1oABKoAwqoApqIOmDelAAJVAGFVAFNZD0RT0ogBIogwqoghpI"
    "olEPCqAEyqACqqAGkhjUgwIogTKogCqogeRm1IMCKIEyqIAqqIHmX9Km9aAASqAMKqAKaiCJQz0ogBIogwqoghpI4lEPCqAE"
    "yqACqqAGkgTUgwIogTKogCqogSQR9aAASqAMKqAKaiBJQj0ogBIogwqoghpIklEPCqAEyqACqqAGkn6oBwVQAmVQAVVQA0kK"
    "6kEBlEAZVEAV1EDSH/WgAEqgDCqgCmogGYB6UAAlUAYVUAU1kAxEPSiAEiiDCqiCGkhSUQ8KoATKoAKqoAaSQagHBVACZVAB"
    "VVADyS2oBwVQAmVQAVVQA8lg1IMCKIEyqIAqqA1u/O8AXi/dvPi+yWf2m6wHz1n5+01zOi6X3n/24qt9cun91jinX2TE2x+5"
    "mke0oF82loY3mle4Ol8bq+9v/+8gf9b1N1kvXf+fUmX2f/ME0363879AjF8HbpLHNc69NpLSOF/I5FxcXP+5WhNM34+WXX0/"
    "epfJ1zF5OZO7mXwHk9cy+WdM/g2T60z+A5NfZnLSvGkexOShTN6OyTszeU8mj2HyfkwuMLmDydOZfAKTT2byGUzuYvKHmPxR"
    "Jn+SyZ9n8peYfENI03wNs/99Ji9n8q1MvpvJP2Hyz5n8OJOfZvKLTE6Y423O5K2ZvBOTRzJ5iPF57PTVPJrZn8zkg5lcZPLR"
    "TJ7F5DlMPpPJi5j8L0z+GJMvZ/KVTP4qk7/D5FxcXFz/X4qNi09ITErul9I/e3LOFOfU33p++9RBxF44h26m0ccM+phHHwWG"
    "Ocj4lobdSZFn7B93x/DM9OFDxw4fFkLS0zIyQkhukbPQlevMtycnRk/Oc9kLnc4p9th5cbHJfe0J9pzsQmdhCH+Gubi4uLh+"
    "j0rf+vi0+++657Nxhwbs8lv39PNnBu6Z3qfn6IaSbfFPnX912+hFXSubNSyeva4VOfZxw8XbPpO+uG9W5Yqzt+8dVZp89J8p"
    "b4m3D3+wx8pRgV/1WBD1QM7ut94eERS2aUHgF9cf+tTzzNrHQm0HcpLUhuTmCwor1847+PaTk1P8sz8ZuXtB6qzoae9+dXZ1"
    "rTRu1fqHDtten3ixY/3ugVLUu2llRWM/Xnys6+ZxZzv2LQ99pOLWu67v468NXrpqYHzU+4/YGqTQlRFZiVPHnfQI+RmBE8Z2"
    "yfHkvx7lHLm34+qkG7wnMy91a//6s/HzV3ym2IZl9Di6Lfytul2TU7csXL6kXe/DhwIGnFt6zF07Qcs6ect082d/uLi4uLi4"
    "/mzycv0m4lcaFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXF9e/Uw3Degd/M35498V50bMWr42uPNrshQ/F11M33fxpTGjr"
    "vV+cnncwIkJtvWBh1qTDp2dGRpecSq2rnvLM8hP10m2P9FVn3Dl4y+PrQg/uPfKevLtF1IF6R/tuE4VNL15IDrr0gOB3Rsuc"
    "0e5L6Ugrub7tkI1+u14+/tme+G8jtg04dqzXK7ZT4X85nz5mzEN73rMtOnVPyduzFkUM7LGhpmzM9PYn77/zqQhb+n228Jc+"
    "T7rcVl73wkpBuCPz3ZR7//pT31XT6+8Zk3PLpO2TqsvajvvX/qJB6vGN23u1u3fbmmNlB95sGB6y/vCzs+V7AjOi2+w5fuG5"
    "OQ992v3OUfrivPrnMt9o1q4q0m9fj4sH+n6x+n530QP8CuDi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi"
    "4uLi4uLi4vot1Kpk+7jvZpxddf3wAWu0qekVd5Lb/OfKnmWTUory9CPHUqcnkZGVb4/qP2rfQf3gx08sPPDRT3P05BXl429T"
    "b31x+XX7+Rnk4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uL648qPPloTG7GTcF8+CH4wfOJn+q/ZTD8M/msBpt8d49vD"
    "3wm/C/zO8HX4veH3hN+mmenHwI+Fnwa/DfxU+GMZfyj8XPit4Y+CPx9+N/hZ8FfBD4bvhP86/Dvhz4J/Dn5L+POt8xNo+j3g"
    "PwK/B/xE+KXws+Cvhf8c/KAg06+Cvxp+DfyZ8N+Cf3Ow6Vv/sfF78IfCz4G/Ef4a+IHw3fDfZfzt8Ncx/j745Yz/KXw3/Obw"
    "v4S/g/FPwK9l/NPwP2P8C/C/gR8Ev8G6rpjxgX6m/wMzPgz+ZcbvAJ80b+p3gR/E+L3hhzJ+Avx2zZseTyr8zow/HH5Pps8d"
    "8GOY8XfB78f4EnyB8fPgO5j+BfDTmfEL4E9g/MXwJzP+UvgzGP95+C7Gfxn+Q4z/N/iPMv4H8J9kjn8z/OcZvwb+S0yfj+Cv"
    "YfxD8N9n/C/hlzP+SfhbGf8M/N2Mfxn+J4zv72/6nzN+C/jHGb8t/NOMHwH/IuP3gE9Cmvo3w2/O+CnwWzN+GvxOjH8b/EjG"
    "z4Afzfj3wE9mfCf8wYyfD19k/Pvhj2Z8GX4W4xfDz2H8p+HPZPwX4Rcx/uvw/8L4a+E/xvgb4S9n/Gr4Kxl/J/xXGf9j+O8w"
    "/n/B3wC/Ffyv4W+DPxz+KfghLZq+b16CHwHfz/pAMKnQlV3gIiMmzcrOy6eYU+TKoZg6s6hwmplOc84zg/yiWWZQmJeb75yC"
    "2EBBXr5rkjEqJ7vQOWmyM9fXypc4842BBc5CpzFJ/mwjLJrlND0zyMme4yoqMKKpefl5vmmn5OU6C42CnGnOnBmFvolzZhgj"
    "sotmGn5eYcGkWDAOjAcTwEQwCUwG+4EpYH+rz5WGVsc4q2Wc1TPOahpndY2z2sZZfeOsxnFW53irc/yVY7U6x1ud463O8Vbn"
    "eKtzvNU53uocb3VOsDonWJ0TrIYJVsMEq2GC1TDBaphgNUywGiZaDROthonWoSZeObFW50Src6LVOdHqnGg1TLIaJlkNk6yG"
    "SVbDpCtPldUwyWqYZDVMsg41yeqcbHVOtjonW52TfZ0L7jNGFBU6C5ITEdCrjl5rxtWZm+1yTqLXfi69MEnMzNn3T8l2ZZOY"
    "/NkuZ8ycudNIjMs5z0ViTLdw/ixX9mRKV4HJaYj+L5+/2dx42CxDAMMZ/nJKQvCe6M+OsOPzDjM+gMnbYn7r8531dYEd9Q0h"
    "156/I3v81sSxSNVr19ubHHsjnTERhQ/sgZjH+vxurSuqydxXFXUJdbZrn//YX6mPqTc54H94/v4bKLU+NA=="))


def check(workdir: Path) -> str | None:
    """None if the translation behaves as the original; else what differs."""
    from pvtranslate.fuzz import check_reproducer
    return check_reproducer(GUEST_ELF, PROGRAM_SITES, Path(workdir))


PROGRAM_SITES = {"0x100025": "lgdt", "0x10002c": "mov.from.cr4", "0x100032": "mov.to.cr4", "0x10003a": "mov.to.cr3", "0x100042": "rdmsr", "0x100049": "wrmsr", "0x10004b": "mov.from.cr0", "0x100053": "mov.to.cr0", "0x100105": "mov.to.ds", "0x100107": "mov.to.es", "0x100109": "mov.to.fs", "0x10010b": "mov.to.gs", "0x10010d": "mov.to.ss", "0x10011b": "lidt", "0x10011e": "mov.from.cr0", "0x100129": "mov.from.cr4", "0x100136": "out8.imm8", "0x10013a": "out8.imm8", "0x10013e": "out8.imm8", "0x100142": "out8.imm8", "0x100146": "out8.imm8", "0x10014a": "out8.imm8", "0x10014e": "out8.imm8", "0x100152": "out8.imm8", "0x100156": "out8.imm8", "0x10015a": "out8.imm8", "0x100161": "ltr", "0x100169": "lldt", "0x100178": "wrmsr", "0x100239": "mov.to.cr2", "0x100254": "pushfq", "0x10026b": "mov.from.cr2", "0x100295": "out8.imm8", "0x10032d": "sti", "0x100337": "hlt", "0x10034f": "pushfq", "0x100379": "out8.imm8", "0x10039d": "out8.dx", "0x100450": "rep.insb", "0x100452": "mov.from.cr2", "0x10046d": "pushfq", "0x10049f": "out8.imm8", "0x1004e2": "rep.outsb", "0x1005a4": "mov.from.ds", "0x1005b1": "mov.to.ds", "0x1005b3": "mov.from.es", "0x1005c0": "mov.to.es", "0x1005c2": "mov.from.fs", "0x1005cf": "mov.to.fs", "0x1005d1": "mov.from.gs", "0x1005de": "mov.to.gs", "0x1005e0": "mov.from.ss", "0x1005ed": "mov.to.ss", "0x1005f1": "popfq", "0x100622": "out8.imm8", "0x100626": "mov.from.cs", "0x10062c": "mov.from.ss", "0x100632": "mov.from.ds", "0x100638": "mov.from.es", "0x10063e": "mov.from.fs", "0x100644": "mov.from.gs", "0x10065a": "mov.from.ds", "0x100667": "mov.to.ds", "0x100669": "mov.from.es", "0x100676": "mov.to.es", "0x100866": "mov.from.cs", "0x10086b": "mov.from.ss", "0x100871": "mov.from.ds", "0x100877": "mov.from.es", "0x10087d": "mov.from.fs", "0x100883": "mov.from.gs", "0x100ab8": "out8.imm8", "0x100ac3": "iretq", "0x100adc": "pushfq", "0x100ae2": "mov.from.cs", "0x100ae7": "mov.from.ss", "0x100aed": "mov.from.ds", "0x100af3": "mov.from.es", "0x100af9": "mov.from.fs", "0x100aff": "mov.from.gs"}   # every sensitive instruction the generator placed: va -> catalog entry


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        problem = check(Path(tmp))
    print(problem or "equivalent: the translation now behaves as the original")
    sys.exit(1 if problem else 0)
