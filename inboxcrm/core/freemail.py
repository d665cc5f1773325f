"""Mailbox providers anyone can sign up to: their domain says nothing about a company.

Without this list every gmail.com sender would become one giant company "gmail.com". The
list is deliberately exact (no subdomain matching): a provider's subdomains are usually
business hosting, and a team adds its local providers with ``team.freemail_domains``.
"""
from __future__ import annotations

from inboxcrm.core.addresses import normalize_domain, normalize_domains

FREEMAIL_DOMAINS: frozenset[str] = frozenset(
    """
    gmail.com googlemail.com
    yahoo.com yahoo.co.uk yahoo.co.in yahoo.co.jp yahoo.com.au yahoo.com.br yahoo.ca yahoo.de
    yahoo.es yahoo.fr yahoo.it yahoo.com.mx yahoo.se
    ymail.com rocketmail.com
    outlook.com outlook.de outlook.fr outlook.es outlook.it outlook.jp outlook.com.br
    hotmail.com hotmail.co.uk hotmail.de hotmail.fr hotmail.es hotmail.it hotmail.nl hotmail.be
    hotmail.se hotmail.ca hotmail.com.br
    live.com live.co.uk live.de live.fr live.nl live.it live.ca live.com.au
    msn.com
    icloud.com me.com mac.com
    aol.com aol.de aol.co.uk aim.com
    gmx.de gmx.net gmx.com gmx.at gmx.ch gmx.fr gmx.us
    web.de t-online.de freenet.de arcor.de posteo.de posteo.net mailbox.org
    proton.me protonmail.com protonmail.ch pm.me
    yandex.ru yandex.com yandex.ua ya.ru
    mail.ru inbox.ru list.ru bk.ru rambler.ru
    zoho.com zohomail.com
    fastmail.com fastmail.fm hey.com
    tutanota.com tutanota.de tutamail.com tuta.io tuta.com
    qq.com foxmail.com 163.com 126.com yeah.net sina.com sina.cn sohu.com aliyun.com
    naver.com daum.net hanmail.net
    rediffmail.com
    orange.fr wanadoo.fr free.fr laposte.net sfr.fr
    libero.it virgilio.it alice.it tiscali.it
    seznam.cz email.cz centrum.cz
    wp.pl onet.pl o2.pl interia.pl
    bluewin.ch
    telenet.be skynet.be
    ziggo.nl kpnmail.nl
    btinternet.com sky.com virginmedia.com talktalk.net
    comcast.net verizon.net att.net sbcglobal.net bellsouth.net cox.net
    earthlink.net
    sympatico.ca shaw.ca rogers.com
    bigpond.com optusnet.com.au
    uol.com.br bol.com.br terra.com.br
    mail.com email.com
    hushmail.com mailfence.com runbox.com disroot.org riseup.net
    """.split()
)


def is_freemail(domain: str, extra: frozenset[str] = frozenset()) -> bool:
    """Exact match on the stored form of a domain (see ``addresses.normalize_domain``), so
    case, a trailing dot and punycode make no difference; ``extra`` is the team's own additions."""
    domain = normalize_domain(domain) or domain.strip().lower()
    return domain in FREEMAIL_DOMAINS or domain in normalize_domains(extra)
