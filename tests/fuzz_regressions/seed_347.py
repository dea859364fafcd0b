"""Fuzz reproducer: seed 347 (64-bit), minimized from 15 case(s) to 3.

Found by pvtranslate.fuzz: diverge (console, blame: native-vmm).
exit status native 1, pv 1; pv error: None; fullvirt agrees with pv
--- native
+++ pv
@@ -3,3 +3,3 @@
 c01 !06 e=0 ip=100336 f=882 sp=0 h=fd212136 k=ddbb7982
-c02 f=8d6 sp=0 h=8fa80a6e k=ddbb7982
+c02 f=8d6 sp=0 h=58a1ba6e k=ddbb7982
 PASS

The guest ELF is embedded below (zlib, base64), so this file needs only pvtranslate and the VMM;
PROGRAM is the fuzz program that generated it (pvtranslate.fuzzgen.FuzzProgram.from_json(PROGRAM)
.build() rebuilds it while the generator is unchanged). Run ``python seed_347.py``: it exits with status 1
while the translation still differs from the original, 0 once it is fixed.

    # fuzz program: seed 347, 64-bit, 3 case(s)
    c00 mov.from.cr2 [to r14] plain: mov r14, cr2
      @SITE: mov r14, cr2
      @POST:
    c01 mwait [qemu64: no MWAIT] plain, expect #6: mwait
      @SITE: mwait
      @POST:
    c02 iretd [same ring, IF=0, arithmetic flags] plain: iretd
          !mov rdx, cr2
      @SITE: iretd
      @POST:
"""
from __future__ import annotations

import base64
import sys
import tempfile
import zlib
from pathlib import Path

SEED = 347
BITS = 64
VERDICT = 'diverge'
ASPECT = 'console'
BLAME = 'native-vmm'
XFAIL_REASON = None   # set when kept as a known bug: the file and the fix it needs
PROGRAM = {'bits': 64,
 'cases': [{'context': 'plain', 'draw_seed': 2799870357, 'entry': 'mov.from.cr2', 'pieces': [], 'variant': 3},
           {'context': 'plain', 'draw_seed': 4038987398, 'entry': 'mwait', 'pieces': [], 'variant': 0},
           {'context': 'plain',
            'draw_seed': 2692831844,
            'entry': 'iretd',
            'pieces': [{'after': [],
                        'before': ['!mov rdx, cr2'],
                        'functions': [],
                        'kind': 'filler-before',
                        'tags': ['site-before', 'filler-site']}],
            'variant': 1}],
 'seed': 347}
GUEST_ELF = zlib.decompress(base64.b64decode(
    "eNrtnAl0FFW6x28Wsko6QFhjoAlhkSVkZ5cKEaZaEcO+RKFCaEIIREw6EtCREgSNCagMoohAoQ7qCBIBNWtTGCGgiBkcAR0f"
    "lqjYZcQRcEFR+t3q+hck9yjvnXfO+By9/3O6ft/3r/q+W7f6Vi+EZNnosWP8/fyIJX9yPTEyO4n05QL8eRcvH0K9wSSQbkNI"
    "sO/YIMOMvLyzJSN/nkZdK+Ib6GcP6BpOWrB5nW+8BKvO3pIqaUnUBeLxS+N1QmYxkHBxcXFxcXFxcXFxcXFxcXFxcXFxcXFx"
    "cXFxcXFxcf3nyPg5dwh9tKWPac6Cyz/3t1SrbrETm197kkJh11YctNtitUrjx+i22BNVMiGqLam18VN5W4LNrramFbItVv2c"
    "+EXStod/+6o0prvmxBp1jbbGs6ZRbHjdmHCN3ZiuXzSdUk0fwU7E0gA6+ZoEM6xoc9pOH0qF/XT3ij6nt1YEUvpT+lH6UXop"
    "vae3Vgq0t42cqJR8bKxy0etUaVztxKO2BPfwdDvxNAYQgkErjetdlesfSTwfUreSZKa0tcU2ipWi57OikrF1MWLVsA4bbe/W"
    "rXtWrJ6e9OD1oXcUbhBrllT/45Mo16A1Yt3692565vDyR+yiO3zchXWdC6bMF/d2jN4a/sRrvVs5KhP2Xfzudm9RP0fVR/bT"
    "N7wf2nW/ozrS4Vrw3k9nBzhqAp9Yqu0/cyzVUdvp3Vlv1UXMbXTU/WVtVdS2MTfFONyfZDdOe//uI2ccezuv37j5hm4RMzMr"
    "lgWSPcc2T0u32Y9ljp8wcfKUqemZ6ePTJ6RPTJ+UPjl9SvrUJ8XVc+IaPXuvTNEj09jT39h0azZx4z91VGUF0Imf9qduZZFj"
    "X+/D18/6WqyqLBzQ6kupx2CxOj9ef9VTkvCTWJPVd1JA11mBH4t1i0Iz3MmOEQtEd1aXx1otenDLNHHvw9dv+DHrz5fuc1Te"
    "9NfF987wd2c7quKLT226/6XD7zuqH8s7WZsxZIniqCmQv9lXV0xqHbXa1P7tVqyb+6mj7n5hcezBxqdHO9z9I6bfc2tc+njH"
    "XveFUTvXrnrZL1FNPGRM2m/P8s3TbH6Hrj7nN/2vzLmcxp7BxqbfFbfS35hzSSCd8zk/Y875Y8JLrl16MFWsevTpmEV/naxt"
    "FaujxNeH3to4urVY8+SSqmzbW1HnxLqduyvrioeuzBbdPYs73T162oV8ce/+mq/8l3+xcLujcuP4Xb0f8ry22FGVuXv+198K"
    "ff0c1XJtz1t23JbV4KgJzcvPiV/Wv6ujdv74mO2b92f86Kj78OvdtVXeoCaHO7xNbMzSb1plOvaWHL/jX+71ftHmfIM2TzMm"
    "9UXDDXGRxt1CeY0xBcqQYyG+PNBY1A2BcVPofGz2o29f/eK86Hfl4txOY0+0sYkwNhLduNOMG+NV2rGCnP666dKEiTXkBjsp"
    "a/fADe1CvK+Vthse5gq59wdCF1BhKw/dkqwZ9XTEKW7fYRENvv8ftOJASPUFuvPH8wUzZ0yfVj9xilhaX3rEe6T07L6P/MXS"
    "E+I7nhWazfaKLNO72vOY1+td+W2xNjPLPNJtzHTFJT9Xh9Kz3kPNK4oDvUeaPi09S42ZWU3PiSvVJW+J353IrBjgmUCbTGva"
    "O+XBoPtUV5gng6ai90DTVzPrM91tjEmdMg7wbKTb+hpChy0NqAnxvaaEZ1bkeNoZe6uMheEZZxxSEeYhBstPzF1xIdIVjNeq"
    "crV5qpZrzVOt3NM89ZQ3Nk8b5/tvqjeHbDAuHEFSFkCn4QrFk+LV3NcZZ5tCB68YaTwF5QdL6ZNd3ki3keUn6LZTuUq39nKN"
    "bvuUe+g2QVztigsRV7srfK9vTeTqZ10TScctC5pbGlA2JmRuaYZ/2ZhIisCyMZ0ogsrG2ClCysb0oQgTV9+ZUCP4LlRyjejj"
    "MHHlUZdjgjvGONGyS/RCl0XFiWX+5uWzUcNtN3YturxrVIgn1rDjDHs6jWZQL9ITQaMm4iaGm0Fjc5yy6LIAz/mf6OGBxo6+"
    "xg4RV2qAb+EGGpbxHJZF5/+z5N56kmknbrM2LVGtMl7S6LhHxB6T3ryQr3bzaxT3fW73Bd59K7633XnKbVyBxEO2V6PGXbaD"
    "Cr/KdIcaI1b+ZKwF47byjKKhpyONMt2tjV2bruzqTcP6RNVNRDupMt6FPVnUdpNFVjrWl4oE6QhfmkD3Pm6Ux9MNppVco26m"
    "HHKyMKyGKL7ozlZuY6ZVRnrdWY8xo/qVh1z0lulgTsh7wHuo6Uz9L9zs3j1xxiC+W56un8A43/IJ8S2fSN/y6eRbPnbf8ukj"
    "lp4Wy2rjTvhK1sUZq8hTRaenz6Cb+WQ+aXqMbv2aHqFb/6Yyug1oWkm3gfrdXt8BrfQiMwjS55tBsJ5tBCH6DDMP1ccbQZh+"
    "o4Fw3bg/51+jDzfQWk81EKHHm8fa9J5mEKlfawRt9PZm3la/xgza6QFmEKX/QNfC/Pb6+Uu+vIP+uRl01D8yg076CTPorL9t"
    "Bl30A2YQrdeZwbX6HiOI0XcY6KpvM+1u+iYz6K6vM4NYvcwMeujLzSBOX2IGPfVFZtBLzzWD3vpMM+ijTzaD6/SxZtBXzzCD"
    "fvpQM+ivJ5rBAL2PGcTr3cxgoN7BDBL11maQpAeaQbJ+0XyGUvRzZpCq62aQpmtmMEg/bgaD9SNmMETfbwZD9VozGKbvNoPh"
    "+t/MYIS+1Qyu1x83g5H6QzTInEg/edlr7HThegOypolXf7v53629txIuv3R5Rl2ky+7jH+itxb8fcHFx/X4VHGnnF4GLi4uL"
    "i4uLi4uLi4uL6/f+/d/Ov/9zcXFxcXFxcXFxcXFxcf3edf9l2kEBlEAZVEAV1Kx6P9SDAiiBMqiAKqiBxB/1oABKoAwqoApq"
    "IAlAPSiAEiiDCqiCGmj+qT9aDwqgBMqgAqqgBpp/xpDWgwIogTKogCqogeafM6T1oABKoAwqoApqIAlGPSiAEiiDCqiCGuj7"
    "9Q+jHhRACZRBBVRBDSShqAcFUAJlUAFVUANJGOpBAZRAGVRAFdRAEo56UAAlUAYVUAU1kFyDelAAJVAGFVAFNZC0Rj0ogBIo"
    "gwqoghpIIlAPCqAEyqACqqAGEhvqQQGUQBlUQBXUQPMXfmg9KIASKIMKqIIaSNqgHhRACZRBBVRBDfT96pFRDwqgBMqgAqqg"
    "BpJ2qAcFUAJlUAFVUANJFOpBAZRAGVRAFdRA0h71oABKoAwqoApqIOmAelAAJVAGFVAFNZB0RD0ogBIogwqoghpo/slTWg8K"
    "oATKoAKqoAaSzqgHBVACZVABVVADSRfUgwIogTKogCqogSQa9aAASqAMKqAKaiC5FvWgAEqgDCqgCmogiUE9KIASKIMKqIIa"
    "SLqiHhRACZRBBVRBDSTdUA8KoATKoAKqoAaab/y0HhRACZRBBVRBDSTdUQ8KoATKoAKqoAaSWNSDAiiBMqiAKqiBpAfqQQGU"
    "QBlUQBXUQBKHelAAJVAGFVAFNZD0RD0ogBIogwqoghpIeqEeFEAJlEEFVEENJL1RDwqgBMqgAqqgBpI+qAcFUAJlUAFVUAPJ"
    "dagHBVACZVABVVADSV/UgwIogTKogCqogaQf6kEBlEAZVEAV1EDSH/WgAEqgDCqgCmogGYB6UAAlUAYVUAU1kMSjHhRACZRB"
    "BVRBDSQDUQ8KoATKoAKqoAaaf0mb1oMCKIEyqIAqqIEkEfWgAEqgDCqgCmogSUI9KIASKIMKqIIaSJJRDwqgBMqgAqqgBpIU"
    "1IMCKIEyqIAqqIEkFfWgAEqgDCqgCmogSUM9KIASKIMKqIIaSAahHhRACZRBBVRBDSSDUQ8KoATKoAKqoAaSIagHBVACZVAB"
    "VVADyVDUgwIogTKogCqogWQY6kEBlEAZVEAV1EAyHPWgAEqgDCqgCmogGYF6UAAlUAYVUAU1kFyPelAAJVAGFVAFNZCMRD0o"
    "gBIogwqogtrI5v8O4PXSzcadJv/ytsmL4Hkr39kyp8fl0vvPXnqlTy6935rn9EtGkn35lTwmnH5tLI9sNq5wZbx2Vt9f/99B"
    "/qjzbzFfOv8/pCrs/+YB5v1mx3+MGL8O3CJPbJ57A8jg5vkyJufi4vrP1bYQ+n605sr70XYm38XklUzuZvIGJm9k8veY/BST"
    "60x+jsm/Z3IS2jIPZvIIJm/P5F2ZvDeTxzP5ICYXmNzB5JlMPp3JZzN5PpO7mPzPTL6KyR9i8vVMvonJ94S1zLcx+3cyeSWT"
    "72PyN5j8HSb/gMk/ZfIvmfw7JifM+YYyeVsmj2byOCYPMz6PfXklH8DsT2PykUwuMvl4Jp/B5DlMvoDJi5n8Hia/n8kfZvIN"
    "TP4Uk7/A5FxcXFz/X0pITEpOSU0bNHhI9uycOc65v/b49rkjiL1oEd3Mo498+iihj0LDHGH8SMPupMgz9k8eN3pa5uiMSaNv"
    "CCOZ6RMnhpHcYmeRK9dZYE9LGTA7z2Uvcjrn2BNKElNn97cn23Oyi5xFYfwZ5uLi4uL6LWr6hhL3x3+6J6F2xMlJGX0LIsI9"
    "AQsPtzpaPXnJkNJY+30Lnv/i2fee+7yg4sGFuT/Uihtuue2mpc+df+KRlSmuEQujml7oqj0Zceb7gtpBiXMeDgtNGJC/f/CC"
    "l++rfWrb4bzgS+47b85v1+bEsKJblu04v2Pc8He0SR/cOnhtj+Orzgz1Elf+idNr1laVLCo8VFG0eMquh7459+1az56zth9H"
    "3PTC1qKfrmvzjGPr68PWvz6p3z9uWz6m39akWcdbjZkQ3e2z+uETKr8YUn3s0ASn0ntkq7yxdw9rvyF5zG2Z8w8duevU3e5H"
    "bceGxJSs7Bu0rf32ZVXPl2VOXDt18rngb9ZuO1XxyXPCpQlDz43OOBPQSc05OouvAC4uLi6uP6K8XL+K+Erj4uLi4uLi4uLi"
    "4uLi4uLi4uLi4uLi4uLi4uLi4vp3asGe6R+XLq2v2bvspWtbB8a9s8Hep72ctjq282uSt6cy1zaqLPrNc1/8/YXH42sbBg7v"
    "2hj5waXj/W5t+NupJ4bdXPPhkQsrhyw9Iyd90VjxfdRZv5Nq8E/juyeNOnPqXy8PXb+w7siEqsjwgnWiuEuZEnpg/bszsraM"
    "T9h86utzt7QLnNE5bG3H3f2fP6hUrJoX8GWnFSc/+m5xnX38zZ1jXf5xG0d1HNvj4ZQfnw2N+K9nril6Nnh15bwu/QbufmtX"
    "z4GTt4w+GnDxxeqRMcumOu7aFm2r8f9g7OnU6j0dYj/qVNel4U+9+s58scvcuPioKQ/0azp8dFXDPa37v/JZ28e3717j39Cl"
    "MGbmkw+9sWXXG8fbvPt5Fl8BXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcv4Y+27W1V273"
    "bd0v3Cw8/sCZDc6TQY8EZT/wwdLq6faXls5/45GM3nM/+adfv5Kya+OHvlQRek1+1v4eQ6qGuY7vL7rxthVdVvEryMXFxcXF"
    "xcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXF9fuVH320JQHETiJ9+Qj4IfCJn+k/HWD6NvhPB5p+TxzfAf5B+N3hd4Wvw+8Lvzf8"
    "dq1MPx5+Avx0+O3gD4c/ifEz4OfCbwv/ZvhL4PeAPwP+k/BD4DvhPwP/FvgL4Z+H3xr+Euv6BJl+L/jL4feCnwK/HP4M+Dvg"
    "Pwo/ONj0a+Fvhl8PfwH85+EPDDH9KPgvws+AnwP/Ffjb4AfBd8PfzvgH4O9i/CPwKxn/GHw3/FD4J+E3MP5p+I2M/yX89xj/"
    "W/in4AfDv2StK+b4ID/TP8ccb4P/PeN3gk9CW/rd4Qczfl/4EYyfDL99aMvzGQ6/K+OPht+b6TMOfjxz/FT4gxhfgi8wfh58"
    "B9O/EH4mc/xd8Kcz/n3wZzP+avj5jL8evovxt8D/M+M/B38V478E/yHm/Kvhr2f8evibmD6H4W9j/Hfh72T8k/ArGf8z+PsY"
    "/yv4bzD+9/DfYXx/f9P/gPHD4X/K+FHwv2T8GPjfMX4v+CSspT8QfijjD4bflvHT4Ucz/o3w4xh/IvwBjH8r/DTGd8IfyfgF"
    "8EXGXwx/POPL8Gcwfin8HMZfC38B42+EX8z4z8C/h/F3wL+f8V+B/zDj74W/gfEPwn+K8f8O/wXGfx/+Hvht4H8Efz/80fA/"
    "hx8W3vJ98wL8GPh+1geCWUWu7EIXGTNrYXZeAcWiYlcOxdwFxUXzzHSes8QMCooXmkFRXm6Bcw5iA4V5Ba5ZxlE52UXOWbOd"
    "ub5WvsRZYBxY6CxyGoMU3G6ExQudpmcGOdmLXMWFRjQ3ryDPN+ycvFxnkVGQM8+Zk1/kGzgn3zgiu3iB4ecVFc5KABPBJDAZ"
    "TAFTwTRwEDgYHGL1udzQ6photUy0eiZaTROtrolW20Srb6LVONHqnGR1Trp8rlbnJKtzktU5yeqcZHVOsjonWZ2TrM7JVudk"
    "q3Oy1TDZaphsNUy2GiZbDZOthslWwxSrYYrVMMU61ZTLF9bqnGJ1TrE6p1idU6yGqVbDVKthqtUw1WqYevmpshqmWg1TrYap"
    "1qmmWp3TrM5pVuc0q3Oar3PhHcYRxUXOwrQUBHTV0bVmrM7cbJdzFl37uXRhkvgFty+ek+3KJvEFt7uc8YvunEfiXc4SF4k3"
    "3aIlC13ZsyldhSbnIfq/fP5mc+MRYBkCGMnw51MShvdEf/YIOz7vMMcHMnkUxrc+31nfC+yovxR29fG7sOdvDZyAVL16vb3F"
    "uTfTVyb64AN7EMaxPr9b8+rTYuwr6nMBdQFXv/4Jv1Aff9Hk0P/h+ftvfkIfwg=="))


def check(workdir: Path) -> str | None:
    """None if the translation behaves as the original; else what differs."""
    from pvtranslate.fuzz import check_reproducer
    return check_reproducer(GUEST_ELF, PROGRAM_SITES, Path(workdir))


PROGRAM_SITES = {"0x100025": "lgdt", "0x10002c": "mov.from.cr4", "0x100032": "mov.to.cr4", "0x10003a": "mov.to.cr3", "0x100042": "rdmsr", "0x100049": "wrmsr", "0x10004b": "mov.from.cr0", "0x100053": "mov.to.cr0", "0x100105": "mov.to.ds", "0x100107": "mov.to.es", "0x100109": "mov.to.fs", "0x10010b": "mov.to.gs", "0x10010d": "mov.to.ss", "0x10011b": "lidt", "0x10011e": "mov.from.cr0", "0x100129": "mov.from.cr4", "0x100136": "out8.imm8", "0x10013a": "out8.imm8", "0x10013e": "out8.imm8", "0x100142": "out8.imm8", "0x100146": "out8.imm8", "0x10014a": "out8.imm8", "0x10014e": "out8.imm8", "0x100152": "out8.imm8", "0x100156": "out8.imm8", "0x10015a": "out8.imm8", "0x100161": "ltr", "0x100169": "lldt", "0x100178": "wrmsr", "0x10019f": "mov.to.cr2", "0x100241": "mov.from.cr2", "0x10025c": "pushfq", "0x100336": "mwait", "0x100350": "pushfq", "0x100452": "mov.from.cr2", "0x100455": "iretd", "0x10046d": "pushfq", "0x10049f": "out8.imm8", "0x1004e2": "rep.outsb", "0x1005a4": "mov.from.ds", "0x1005b1": "mov.to.ds", "0x1005b3": "mov.from.es", "0x1005c0": "mov.to.es", "0x1005c2": "mov.from.fs", "0x1005cf": "mov.to.fs", "0x1005d1": "mov.from.gs", "0x1005de": "mov.to.gs", "0x1005e0": "mov.from.ss", "0x1005ed": "mov.to.ss", "0x1005f1": "popfq", "0x100622": "out8.imm8", "0x100626": "mov.from.cs", "0x10062c": "mov.from.ss", "0x100632": "mov.from.ds", "0x100638": "mov.from.es", "0x10063e": "mov.from.fs", "0x100644": "mov.from.gs", "0x10065a": "mov.from.ds", "0x100667": "mov.to.ds", "0x100669": "mov.from.es", "0x100676": "mov.to.es", "0x100866": "mov.from.cs", "0x10086b": "mov.from.ss", "0x100871": "mov.from.ds", "0x100877": "mov.from.es", "0x10087d": "mov.from.fs", "0x100883": "mov.from.gs", "0x100ab8": "out8.imm8", "0x100ac3": "iretq", "0x100adc": "pushfq", "0x100ae2": "mov.from.cs", "0x100ae7": "mov.from.ss", "0x100aed": "mov.from.ds", "0x100af3": "mov.from.es", "0x100af9": "mov.from.fs", "0x100aff": "mov.from.gs"}   # every sensitive instruction the generator placed: va -> catalog entry


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        problem = check(Path(tmp))
    print(problem or "equivalent: the translation now behaves as the original")
    sys.exit(1 if problem else 0)
